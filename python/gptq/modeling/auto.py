"""AutoGPTQ's model API: AutoGPTQForCausalLM.from_pretrained / from_quantized and the wrapper they
return (quantize, save_quantized, generate, to, device, model).

Changing `from auto_gptq import AutoGPTQForCausalLM, BaseQuantizeConfig` to
`from gptq import AutoGPTQForCausalLM, BaseQuantizeConfig` is meant to be the whole migration.
Unlike AutoGPTQ everything also runs on a machine without a GPU (slowly).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import checkpoint as ckpt
from .layout import (
    Conv1D,
    LayoutError,
    find_layers_block,
    layout_for,
    split_fused_experts,
)

logger = logging.getLogger("gptq")

_HUB_KWARGS = ("cache_dir", "force_download", "resume_download", "proxies", "local_files_only", "token",
               "use_auth_token", "revision", "subfolder", "_commit_hash")


def _default_device() -> torch.device:
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def post_init_model(model: nn.Module, backend: str = "auto", trainable: bool = False) -> nn.Module:
    """Lets every QuantLinear choose its kernel for the device it now sits on."""
    from .. import nn as gnn

    if hasattr(gnn, "post_init_model"):
        return gnn.post_init_model(model, backend=backend, trainable=trainable)
    for m in model.modules():
        if isinstance(m, gnn.QuantLinear):
            m.post_init(backend=backend, trainable=trainable)
    return model


def resolve_backend(backend: str = "auto", *, use_triton: bool = False, use_tritonv2: bool = False,
                    use_exllama: bool | None = None, disable_exllama: bool | None = None,
                    disable_exllamav2: bool = False, use_marlin: bool = False, use_qigen: bool = False,
                    trainable: bool = False) -> str:
    """Maps AutoGPTQ's kernel flags to one of our backends, and logs what each flag became."""
    from ..nn import backends as B

    def known(name):
        name = B.ALIASES.get(name, name)
        return name if name in B.BACKENDS else None

    if backend not in (None, "auto"):
        return backend
    wanted = None
    if use_marlin:
        wanted = "marlin"
    elif use_triton or use_tritonv2:
        wanted = "tritonv2" if use_tritonv2 else "triton"
    elif use_qigen:
        wanted = "qigen"
    elif use_exllama or disable_exllama is False:
        wanted = "exllama"
    elif disable_exllama and disable_exllamav2:
        wanted = "cuda"
    if trainable:
        logger.info("gptq: trainable=True -> backend 'auto_trainable'%s",
                    f" (AutoGPTQ kernel flag for {wanted!r} ignored)" if wanted else "")
        return "auto_trainable"
    if wanted is None:
        return "auto"
    ours = known(wanted)
    if ours:
        logger.info("gptq: AutoGPTQ kernel %r -> gptq backend %r", wanted, ours)
        return ours
    logger.info("gptq: AutoGPTQ kernel %r has no counterpart of that name here; using backend 'auto' "
                "(the fastest valid kernel of: %s)", wanted, ", ".join(B.available_backends()))
    return "auto"


def _load_hf_config(path, trust_remote_code, **kw):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, **kw)


def _seqlen(config) -> int:
    for k in ("max_position_embeddings", "seq_length", "n_positions"):
        v = getattr(config, k, None)
        if isinstance(v, int):
            return v
    return 4096


class GPTQForCausalLM(nn.Module):
    """A transformers causal LM with GPTQ quantization state (AutoGPTQ's BaseGPTQForCausalLM).

    Attributes: `model` (the transformers model), `quantize_config`, `quantized`, `quant_log`
    (per-module records after quantize()), `tokenizer` (when known).
    """

    def __init__(self, model: nn.Module, quantized: bool, quantize_config, tokenizer=None,
                 model_path: str | None = None, init_kwargs: dict | None = None, backend: str = "auto"):
        super().__init__()
        self.model = model
        self.quantized = quantized
        self.quantize_config = quantize_config
        self.tokenizer = tokenizer
        self.quant_log: list = []
        self.quant_stats = None
        self.backend = backend
        self._model_path = model_path
        self._init_kwargs = init_kwargs or {}
        self.seqlen = _seqlen(getattr(model, "config", None))

    # ---- forwarding to the transformers model ----------------------------------------------------
    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    @property
    def device(self) -> torch.device:
        try:
            return self.model.device
        except AttributeError:
            return next(self.model.parameters()).device

    @property
    def hf_device_map(self):
        return getattr(self.model, "hf_device_map", None)

    def to(self, *args, **kwargs):
        self.model.to(*args, **kwargs)
        if self.quantized:
            post_init_model(self.model, self.backend)
        return self

    def cuda(self, device=None):
        return self.to(torch.device("cuda" if device is None else device))

    def cpu(self):
        return self.to("cpu")

    def generate(self, *args, **kwargs):
        """transformers generate(); a string (or list of strings) prompt is tokenized and the result
        decoded when the tokenizer is known."""
        if args and (isinstance(args[0], str) or (isinstance(args[0], list) and args[0]
                                                   and isinstance(args[0][0], str))):
            if self.tokenizer is None:
                raise ValueError("generate: a text prompt needs a tokenizer (pass tokenizer= when loading)")
            prompts = [args[0]] if isinstance(args[0], str) else args[0]
            enc = self.tokenizer(prompts, return_tensors="pt", padding=len(prompts) > 1).to(self.device)
            with torch.inference_mode():
                out = self.model.generate(**enc, **kwargs)
            texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
            return texts[0] if isinstance(args[0], str) else texts
        with torch.inference_mode():
            return self.model.generate(*args, **kwargs)

    def prepare_inputs_for_generation(self, *args, **kwargs):
        return self.model.prepare_inputs_for_generation(*args, **kwargs)

    # ---- quantization ------------------------------------------------------------------------------
    def _get_tokenizer(self):
        if self.tokenizer is None and self._model_path is not None:
            from transformers import AutoTokenizer

            kw = {k: v for k, v in self._init_kwargs.items() if k in _HUB_KWARGS or k == "gguf_file"}
            self.tokenizer = AutoTokenizer.from_pretrained(self._model_path, **kw)
        return self.tokenizer

    def quantize(self, examples, batch_size: int = 1, use_triton: bool = False, use_cuda_fp16: bool = True,
                 autotune_warmup_after_quantized: bool = False, cache_examples_on_gpu: bool = True,
                 tokenizer=None, device: torch.device | str | None = None, progress: bool = True):
        """Quantizes the model in place with GPTQ, layer by layer (see quantizer.py).

        examples: tokenizer outputs (dicts with input_ids and attention_mask, lists or tensors), lists
        of token ids, or strings (tokenized with `tokenizer` or the model's tokenizer).
        Returns the per-module log (also in `self.quant_log`). The model ends on the device it
        started on; its linears are QuantLinear modules.
        """
        from .quantizer import make_batches, normalize_examples, quantize_model

        if self.quantized:
            raise RuntimeError("quantize: the model is already quantized")
        if use_triton or autotune_warmup_after_quantized:
            logger.info("gptq: use_triton/autotune_warmup_after_quantized are AutoGPTQ options with no effect here")
        needs_tok = isinstance(examples, str) or (isinstance(examples, (list, tuple)) and examples
                                                  and isinstance(examples[0], str))
        tok = tokenizer or (self._get_tokenizer() if needs_tok else self.tokenizer)
        seqs = normalize_examples(examples, tok)
        cfg = self.model.config
        pad = next((v for v in (getattr(cfg, "pad_token_id", None), getattr(cfg, "eos_token_id", None))
                    if isinstance(v, int)), None)
        if pad is None and isinstance(getattr(cfg, "eos_token_id", None), list):
            pad = cfg.eos_token_id[0]
        vocab = getattr(cfg, "vocab_size", None)
        if pad is None or (isinstance(vocab, int) and not 0 <= pad < vocab):
            pad = 0  # padded positions are masked out; any valid id will do
        batches = make_batches(seqs, batch_size, pad)
        split_fused_experts(self.model)
        stats = quantize_model(self.model, batches, self.quantize_config, device=device,
                               cache_examples_on_gpu=cache_examples_on_gpu, progress=progress, backend=self.backend)
        self.quantized = True
        self.quant_stats = stats
        self.quant_log = stats.records
        if tokenizer is not None and self.tokenizer is None:
            self.tokenizer = tokenizer
        self.model.config.quantization_config = ckpt.hf_quantization_config(
            self.quantize_config, layers_block_name=stats.layers_block_name, modules_in_block=None,
            version=_version(), seqlen=self.seqlen)
        logger.info("gptq: quantized %d linears in %.1f s (capture %.1f s, layer forwards %.1f s, "
                    "solver %.1f s, packing %.1f s)", len(stats.records),
                    stats.seconds_capture + stats.seconds_forward + stats.seconds_solve + stats.seconds_pack,
                    stats.seconds_capture, stats.seconds_forward, stats.seconds_solve, stats.seconds_pack)
        return [r.__dict__ for r in stats.records]

    # ---- saving ---------------------------------------------------------------------------------------
    def save_quantized(self, save_dir: str | os.PathLike, use_safetensors: bool = True,
                       safetensors_metadata: dict | None = None, max_shard_size: int | str = "10GB",
                       model_base_name: str | None = None, tokenizer=None):
        if not self.quantized:
            raise RuntimeError("save_quantized: the model is not quantized yet (call quantize() first)")
        return ckpt.save_checkpoint(self.model, save_dir, self.quantize_config, stats=self.quant_stats,
                                    tokenizer=tokenizer or self.tokenizer, use_safetensors=use_safetensors,
                                    max_shard_size=max_shard_size, safetensors_metadata=safetensors_metadata,
                                    model_base_name=model_base_name)

    def save_pretrained(self, save_dir, **kwargs):
        """Alias of save_quantized (AutoGPTQ)."""
        return self.save_quantized(save_dir, **kwargs)


def _version() -> str:
    from .. import __version__

    return __version__


class AutoGPTQForCausalLM:
    """Entry point: `from_pretrained` (float model to quantize) and `from_quantized` (checkpoint)."""

    def __init__(self):
        raise EnvironmentError("AutoGPTQForCausalLM is used through from_pretrained() or from_quantized()")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, quantize_config, max_memory: dict | None = None,
                        trust_remote_code: bool = False, torch_dtype: torch.dtype | str = torch.float16,
                        tokenizer=None, **model_init_kwargs) -> GPTQForCausalLM:
        """Loads a float causal LM (on the CPU) to quantize. `pretrained_model_name_or_path` may also
        be an already built transformers model. Extra keyword arguments go to transformers'
        from_pretrained (revision, gguf_file, attn_implementation, ...)."""
        from ..config import BaseQuantizeConfig

        if isinstance(quantize_config, dict):
            quantize_config = BaseQuantizeConfig.from_dict(quantize_config)
        if not isinstance(quantize_config, BaseQuantizeConfig):
            raise TypeError(f"from_pretrained: quantize_config must be a BaseQuantizeConfig or dict, got "
                            f"{type(quantize_config).__name__}")
        if max_memory is not None:
            logger.info("gptq: max_memory is not needed for quantization (one layer at a time visits the GPU); ignored")
        if isinstance(pretrained_model_name_or_path, nn.Module):
            model, path = pretrained_model_name_or_path, getattr(pretrained_model_name_or_path, "name_or_path", None)
        else:
            from transformers import AutoModelForCausalLM

            path = str(pretrained_model_name_or_path)
            kw = dict(model_init_kwargs)
            dtype = kw.pop("dtype", torch_dtype)
            if isinstance(dtype, str) and dtype != "auto":
                dtype = getattr(torch, dtype)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code, **kw)
        if quantize_config.model_name_or_path is None and isinstance(path, str):
            quantize_config.model_name_or_path = path
        model.eval()
        find_layers_block(model)  # fail early, with the remedy, on an unknown layout
        return GPTQForCausalLM(model, quantized=False, quantize_config=quantize_config, tokenizer=tokenizer,
                               model_path=path, init_kwargs=model_init_kwargs)

    @classmethod
    def from_quantized(cls, model_name_or_path, device_map: str | dict | None = None, max_memory: dict | None = None,
                       device: torch.device | str | int | None = None, low_cpu_mem_usage: bool = False,
                       use_triton: bool = False, inject_fused_attention: bool = False,
                       inject_fused_mlp: bool = False, use_cuda_fp16: bool = True, quantize_config=None,
                       model_basename: str | None = None, use_safetensors: bool = True,
                       trust_remote_code: bool = False, warmup_triton: bool = False, trainable: bool = False,
                       disable_exllama: bool | None = None, disable_exllamav2: bool = False,
                       use_marlin: bool = False, use_tritonv2: bool = False, use_exllama: bool | None = None,
                       use_qigen: bool = False, torch_dtype: torch.dtype | str | None = None,
                       checkpoint_format: str | None = None, backend: str = "auto", tokenizer=None,
                       **kwargs) -> GPTQForCausalLM:
        """Loads a GPTQ checkpoint (ours, AutoGPTQ's, GPTQModel's or optimum's; format gptq or gptq_v2;
        sharded or not) into a transformers model whose quantized linears are QuantLinear."""
        from ..config import BaseQuantizeConfig

        folder = Path(str(model_name_or_path))
        if not folder.is_dir():
            try:
                from huggingface_hub import snapshot_download

                hub = {k: v for k, v in kwargs.items() if k in _HUB_KWARGS}
                folder = Path(snapshot_download(str(model_name_or_path), **hub))
            except Exception as e:
                raise FileNotFoundError(f"from_quantized: {model_name_or_path!r} is not a folder and could not "
                                        f"be fetched from the Hugging Face Hub ({e})") from e
        if isinstance(quantize_config, dict):
            quantize_config = BaseQuantizeConfig.from_dict(quantize_config)
        if quantize_config is None:
            quantize_config = BaseQuantizeConfig.from_pretrained(folder)
        if checkpoint_format is not None:
            import dataclasses

            quantize_config = dataclasses.replace(quantize_config, checkpoint_format=checkpoint_format)
        fmt = quantize_config.checkpoint_format
        from ..format import CHECKPOINT_FORMATS

        if fmt not in CHECKPOINT_FORMATS or quantize_config.quant_method != "gptq":
            raise ValueError(f"from_quantized: {folder}: quant_method {quantize_config.quant_method!r} with "
                             f"checkpoint_format {fmt!r} is not supported; this loader reads GPTQ checkpoints in "
                             f"format {sorted(CHECKPOINT_FORMATS)}")
        for flag, value in (("inject_fused_attention", inject_fused_attention), ("inject_fused_mlp", inject_fused_mlp),
                            ("warmup_triton", warmup_triton), ("low_cpu_mem_usage", low_cpu_mem_usage)):
            if value:
                logger.info("gptq: %s is an AutoGPTQ option with no effect here", flag)
        backend = resolve_backend(backend, use_triton=use_triton, use_tritonv2=use_tritonv2, use_exllama=use_exllama,
                                  disable_exllama=disable_exllama, disable_exllamav2=disable_exllamav2,
                                  use_marlin=use_marlin, use_qigen=use_qigen, trainable=trainable)

        # the device(s) and compute dtype
        if isinstance(device, int):
            device = torch.device("cuda", device)
        if device is None and device_map is None and max_memory is None:
            device = _default_device()
        if torch_dtype is None:
            on_cpu = (device is not None and torch.device(device).type == "cpu") or (
                device is None and not torch.cuda.is_available())
            # fp16 matmuls are slow on most CPUs; AutoGPTQ's fp16 default is kept for GPUs
            torch_dtype = torch.float32 if (on_cpu or not use_cuda_fp16) else torch.float16
        if isinstance(torch_dtype, str):
            torch_dtype = getattr(torch, torch_dtype)

        model = build_quantized_model(folder, quantize_config, torch_dtype, model_basename, use_safetensors,
                                      trust_remote_code, backend)
        if device_map is not None or max_memory is not None:
            _dispatch(model, device_map or "auto", max_memory)
        else:
            model.to(device)
        post_init_model(model, backend, trainable)
        if tokenizer is None:
            tokenizer = _maybe_tokenizer(folder)
        wrapper = GPTQForCausalLM(model, quantized=True, quantize_config=quantize_config, tokenizer=tokenizer,
                                  model_path=str(folder), backend=backend)
        return wrapper


def _maybe_tokenizer(folder: Path):
    if not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        return None
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as e:  # a broken tokenizer must not prevent loading the model
        logger.info("gptq: tokenizer in %s not loaded: %s", folder, e)
        return None


def _dispatch(model, device_map, max_memory):
    from accelerate import dispatch_model, infer_auto_device_map

    if isinstance(device_map, str):
        if device_map not in ("auto", "balanced", "balanced_low_0", "sequential"):
            raise ValueError(f"from_quantized: device_map must be a dict or one of 'auto', 'balanced', "
                             f"'balanced_low_0', 'sequential', got {device_map!r}")
        _, layers = find_layers_block(model)
        no_split = [type(layers[0]).__name__]
        if not torch.cuda.is_available():
            device_map = {"": "cpu"}
        else:
            device_map = infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=no_split)
    if set(device_map.values()) <= {"cpu"} or set(device_map.values()) <= {torch.device("cpu")}:
        model.to("cpu")
        return
    dispatch_model(model, device_map=device_map)


def build_quantized_model(folder: Path, qc, dtype: torch.dtype, model_basename, use_safetensors, trust_remote_code,
                          backend: str = "auto") -> nn.Module:
    """A transformers model built from folder/config.json with QuantLinear where the checkpoint has
    qweight tensors, loaded shard by shard (peak host memory: the model plus one shard)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    from ..nn import QuantLinear

    config = _load_hf_config(str(folder), trust_remote_code)
    qdict = getattr(config, "quantization_config", None)
    if qdict is not None:
        config.quantization_config = None
        try:
            delattr(config, "quantization_config")
        except AttributeError:
            pass
    files = ckpt.find_weight_files(folder, model_basename, qc, use_safetensors)
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)
    layout = layout_for(model)
    shapes = ckpt.rename_keys(ckpt.tensor_shapes(files), layout.legacy_renames)
    if any(".experts." in k and k.endswith(".qweight") for k in shapes):
        split_fused_experts(model)

    quantized = sorted(k[: -len(".qweight")] for k in shapes if k.endswith(".qweight"))
    if not quantized:
        raise ValueError(f"from_quantized: {folder}: no '.qweight' tensor in {', '.join(f.name for f in files)}; "
                         f"not a GPTQ checkpoint")
    modules = dict(model.named_modules())
    for name in quantized:
        m = modules.get(name)
        if m is None:
            raise ValueError(f"from_quantized: checkpoint tensor {name}.qweight has no module {name!r} in "
                             f"{type(model).__name__}")
        rows, n = shapes[name + ".qweight"][0]
        k = rows * 32 // qc.bits
        if isinstance(m, (nn.Linear, Conv1D)):
            want = (m.weight.shape[0], m.weight.shape[1]) if isinstance(m, Conv1D) else (m.in_features, m.out_features)
            if (k, n) != tuple(want):
                raise ValueError(f"from_quantized: {name}.qweight {shapes[name + '.qweight'][0]} decodes to "
                                 f"in={k}, out={n} at bits={qc.bits}, but the model's layer is in={want[0]}, "
                                 f"out={want[1]} (wrong bits in the quantize config?)")
        ql = QuantLinear(qc.bits, qc.group_size, k, n, (name + ".bias") in shapes, desc_act=qc.desc_act, sym=qc.sym,
                         checkpoint_format=qc.checkpoint_format, dtype=dtype, backend=backend, device="meta")
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, ql)

    loaded: set[str] = set()
    expected = dict(model.state_dict(keep_vars=True))
    unexpected: list[str] = []
    for f in files:
        part = ckpt.rename_keys(ckpt.read_file(f), layout.legacy_renames)
        for key, t in list(part.items()):
            if key not in expected:
                unexpected.append(key)
                del part[key]
                continue
            if t.is_floating_point():
                part[key] = t.to(dtype)
            want = tuple(expected[key].shape)
            if tuple(t.shape) != want:
                raise ValueError(f"from_quantized: {f.name}: tensor {key} has shape {tuple(t.shape)}, the model "
                                 f"expects {want}")
        model.load_state_dict(part, strict=False, assign=True)
        loaded.update(part)
        del part
    if unexpected:
        logger.info("gptq: %d checkpoint tensor(s) not used by the model, e.g. %s", len(unexpected), unexpected[:3])
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    for m in model.modules():  # checkpoints without g_idx: the trivial group order
        if isinstance(m, QuantLinear) and m.g_idx.device.type == "meta":
            g = torch.arange(m.in_features, dtype=torch.int32)
            m.g_idx = g // m.group_size if m.group_size != -1 else torch.zeros_like(g)
    missing = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.device.type == "meta"]
    if missing:
        raise ValueError(f"from_quantized: {folder}: {len(missing)} tensor(s) missing from the checkpoint, e.g. "
                         f"{', '.join(missing[:5])}")
    if qdict is not None:
        config.quantization_config = qdict
    model.eval()
    return model
