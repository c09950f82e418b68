"""Quantized checkpoints on disk: writing (atomically, optionally sharded) and finding/reading the
weight files of AutoGPTQ, GPTQModel, optimum/transformers and our own layout.

Folder written by `save_checkpoint`:
  model.safetensors                 (or model-0000i-of-0000n.safetensors + model.safetensors.index.json)
  config.json                       the transformers config with quantization_config (GPTQConfig's fields)
  quantize_config.json              BaseQuantizeConfig (AutoGPTQ/GPTQModel read it)
  quant_log.csv                     layer, module, loss, damp_percent, seconds, samples, method
  generation_config.json, tokenizer files (when there are any)
Everything is written into a temporary sibling folder which is then renamed into place, so an
interrupted save leaves either the old folder or the new one, never a mix.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger("gptq")

SAFE = ".safetensors"


def parse_size(size: int | str) -> int:
    """Bytes of "4GB", "500MB", "2GiB", "1e9" or an int."""
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([KMGT]?i?B)?\s*", str(size), flags=re.I)
    if not m:
        raise ValueError(f"max_shard_size must be an int or a string like '4GB', got {size!r}")
    value = float(m.group(1))
    unit = (m.group(2) or "B").upper()
    mult = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
            "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}[unit]
    return int(value * mult)


# ---- writing ----------------------------------------------------------------------------------------
def hf_quantization_config(qc, *, layers_block_name: str | None, modules_in_block: list[list[str]] | None,
                           version: str, seqlen: int | None = None, pad_token_id: int | None = None) -> dict:
    """config.json["quantization_config"]: transformers' GPTQConfig fields (they load with
    GPTQConfig.from_dict), plus the AutoGPTQ keys other loaders read and a `meta` block."""
    return {
        "quant_method": "gptq",
        "bits": qc.bits,
        "group_size": qc.group_size,
        "damp_percent": qc.damp_percent,
        "desc_act": qc.desc_act,
        "static_groups": qc.static_groups,
        "sym": qc.sym,
        "true_sequential": qc.true_sequential,
        "checkpoint_format": qc.checkpoint_format,
        "format": qc.checkpoint_format,
        "act_group_aware": False,
        "model_name_or_path": qc.model_name_or_path,
        "model_file_base_name": qc.model_file_base_name,
        "dataset": None,
        "tokenizer": None,
        "block_name_to_quantize": layers_block_name,
        "module_name_preceding_first_block": None,
        "modules_in_block_to_quantize": modules_in_block,
        "model_seqlen": seqlen,
        "batch_size": 1,
        "pad_token_id": pad_token_id,
        "cache_block_outputs": True,
        "max_input_length": None,
        "meta": {
            "quantizer": [f"gptq:{version}"],
            "damp_percent": qc.damp_percent,
            "damp_auto_increment": qc.damp_auto_increment,
            "static_groups": qc.static_groups,
            "true_sequential": qc.true_sequential,
            "mse": qc.mse,
        },
    }


def _shared_free(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Drops tensors that alias an earlier one (tied embeddings); returns (state, {dropped: kept})."""
    seen: dict[tuple, str] = {}
    out, dropped = {}, {}
    for name, t in state.items():
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype) \
            if t.device.type != "meta" else None
        if key is not None and key in seen:
            dropped[name] = seen[key]
            continue
        if key is not None:
            seen[key] = name
        out[name] = t
    return out, dropped


def checkpoint_state(model: torch.nn.Module, float_dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors to save: QuantLinear scales as fp16 (the format's dtype), other floats in
    `float_dtype`, integers as they are; all contiguous on the CPU."""
    from ..nn import QuantLinear

    quant_prefixes = {name + "." for name, m in model.named_modules() if isinstance(m, QuantLinear)}
    state, dropped = _shared_free(model.state_dict())
    out = {}
    for name, t in state.items():
        t = t.detach()
        if t.is_floating_point():
            prefix = name.rsplit(".", 1)[0] + "."
            t = t.to(torch.float16 if (prefix in quant_prefixes and name.endswith(".scales")) else float_dtype)
        out[name] = t.to("cpu").contiguous()
    return out, dropped


def _write_weights(state: dict[str, torch.Tensor], folder: Path, base: str, use_safetensors: bool,
                   max_shard_size: int, metadata: dict[str, str]) -> list[str]:
    ext = SAFE if use_safetensors else ".bin"
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in state.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_size:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    if len(shards) == 1:
        names = [f"{base}{ext}"]
    else:
        names = [f"{base}-{i + 1:05d}-of-{len(shards):05d}{ext}" for i in range(len(shards))]
    for fname, shard in zip(names, shards):
        path = folder / fname
        if use_safetensors:
            from safetensors.torch import save_file

            save_file(shard, str(path), metadata=metadata)
        else:
            torch.save(shard, str(path))
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
                 "weight_map": {n: f for f, s in zip(names, shards) for n in s}}
        (folder / f"{base}{ext}.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return names


def write_quant_log(records, path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["layer", "module", "loss", "damp_percent", "seconds", "samples", "method"])
        for r in records:
            w.writerow([r.layer, r.module, f"{r.loss:.6g}", f"{r.damp_percent:.6g}", f"{r.seconds:.4f}", r.samples,
                        r.method])


def atomic_folder(save_dir: str | os.PathLike):
    """Context manager yielding a temporary folder that replaces `save_dir` on success."""
    return _AtomicFolder(Path(save_dir))


# Files a save writes; stale copies of these are not carried over from an existing folder.
_OWNED = re.compile(r"(.*\.safetensors|.*\.bin|.*\.pt|.*\.index\.json|config\.json|quantize_config\.json|"
                    r"quant_config\.json|quant_log\.csv|generation_config\.json)$")


class _AtomicFolder:
    def __init__(self, target: Path):
        self.target = target.resolve() if target.exists() else Path(os.path.abspath(target))

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.tmp-", dir=self.target.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        if self.target.exists():
            if not self.target.is_dir():
                shutil.rmtree(self.tmp, ignore_errors=True)
                raise FileExistsError(f"save_quantized: {self.target} exists and is not a folder")
            # keep the user's other files (README, ...); our own outputs are replaced as a set
            old = self.target.parent / f".{self.target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(self.target, old)
            os.replace(self.tmp, self.target)
            for entry in old.iterdir():
                if not _OWNED.fullmatch(entry.name) and not (self.target / entry.name).exists():
                    os.replace(entry, self.target / entry.name)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.target)
        return False


def save_checkpoint(model, save_dir, quantize_config, *, stats=None, tokenizer=None, use_safetensors=True,
                    max_shard_size="10GB", safetensors_metadata: dict | None = None, model_base_name=None,
                    float_dtype: torch.dtype | None = None) -> Path:
    import dataclasses

    from .. import __version__

    qc = dataclasses.replace(quantize_config)
    base = model_base_name or qc.model_file_base_name or "model"
    qc.model_file_base_name = base
    if float_dtype is None:
        dtype = next(model.parameters()).dtype
        float_dtype = torch.float16 if dtype == torch.float32 else dtype
    state, dropped = checkpoint_state(model, float_dtype)
    meta = {"format": "pt", "gptq_version": __version__, "gptq_bits": str(qc.bits),
            "gptq_group_size": str(qc.group_size), "gptq_desc_act": str(qc.desc_act),
            "gptq_damp_percent": str(qc.damp_percent), "gptq_checkpoint_format": qc.checkpoint_format,
            "gptq_quant_method": qc.quant_method}
    for k, v in (safetensors_metadata or {}).items():
        meta[str(k)] = str(v)

    config = model.config
    modules_in_block = None
    if stats is not None and stats.skipped:
        modules_in_block = [list(g) for g in stats.groups] or None
    seqlen = next((getattr(config, k) for k in ("max_position_embeddings", "seq_length", "n_positions")
                   if isinstance(getattr(config, k, None), int)), None)
    qdict = hf_quantization_config(
        qc, layers_block_name=getattr(stats, "layers_block_name", None) or None, modules_in_block=modules_in_block,
        version=__version__, seqlen=seqlen, pad_token_id=getattr(config, "pad_token_id", None))
    cfg = config.to_dict()
    cfg["quantization_config"] = qdict
    dname = str(float_dtype).replace("torch.", "")
    cfg["dtype"] = dname
    cfg["torch_dtype"] = dname

    with atomic_folder(save_dir) as tmp:
        files = _write_weights(state, tmp, base, use_safetensors, parse_size(max_shard_size), meta)
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True, default=str) + "\n")
        qc.save_pretrained(tmp)
        gen = getattr(model, "generation_config", None)
        if gen is not None:
            try:
                gen.save_pretrained(tmp)
            except Exception as e:  # an invalid generation config must not lose the checkpoint
                logger.warning("gptq: generation_config.json not written: %s", e)
        if stats is not None:
            write_quant_log(stats.records, tmp / "quant_log.csv")
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
    logger.info("gptq: saved %s (%d weight file(s); tied copies not stored: %s)", save_dir, len(files),
                ", ".join(dropped) or "none")
    return Path(save_dir)


# ---- reading ----------------------------------------------------------------------------------------
def candidate_basenames(model_basename: str | None, quantize_config) -> list[str]:
    names = []
    if model_basename:
        names.append(model_basename)
    if quantize_config is not None:
        if getattr(quantize_config, "model_file_base_name", None):
            names.append(quantize_config.model_file_base_name)
        names.append("model")
        names.append(f"gptq_model-{quantize_config.bits}bit-{quantize_config.group_size}g")
    else:
        names.append("model")
    names.append("pytorch_model")
    return list(dict.fromkeys(names))


def find_weight_files(folder: Path, model_basename: str | None, quantize_config,
                      use_safetensors: bool = True) -> list[Path]:
    """The weight files of a checkpoint folder, in AutoGPTQ's lookup order (see api-and-format §1.1)."""
    folder = Path(folder)
    exts = [SAFE, ".bin", ".pt"] if use_safetensors else [".bin", ".pt", SAFE]
    tried = []
    for base in candidate_basenames(model_basename, quantize_config):
        for ext in exts:
            index = folder / f"{base}{ext}.index.json"
            single = folder / f"{base}{ext}"
            tried += [index.name, single.name]
            if index.is_file():
                weight_map = json.loads(index.read_text())["weight_map"]
                files = [folder / f for f in dict.fromkeys(weight_map.values())]
                missing = [str(f) for f in files if not f.is_file()]
                if missing:
                    raise FileNotFoundError(f"from_quantized: {index} lists missing shard(s): {', '.join(missing)}")
                return files
            if single.is_file():
                if ext != exts[0]:
                    logger.info("gptq: using %s (no %s file found)", single.name, exts[0])
                return [single]
    if model_basename is None:
        found = sorted(folder.glob(f"*{SAFE}"))
        if len(found) == 1:
            logger.info("gptq: using the only safetensors file in the folder, %s", found[0].name)
            return found
    raise FileNotFoundError(f"from_quantized: no weight file in {folder}; tried {', '.join(tried)} "
                            f"(pass model_basename= to name it)")


def tensor_shapes(files: list[Path]) -> dict[str, tuple[tuple[int, ...], str]]:
    """{name: (shape, dtype string)} without reading the data (safetensors) or by loading (.bin)."""
    out = {}
    for f in files:
        if f.suffix == SAFE:
            from safetensors import safe_open

            with safe_open(str(f), framework="pt") as sf:
                for k in sf.keys():
                    sl = sf.get_slice(k)
                    out[k] = (tuple(sl.get_shape()), sl.get_dtype())
        else:
            for k, t in torch.load(str(f), map_location="cpu", weights_only=True).items():
                out[k] = (tuple(t.shape), str(t.dtype))
    return out


def read_file(f: Path) -> dict[str, torch.Tensor]:
    if f.suffix == SAFE:
        from safetensors.torch import load_file

        return load_file(str(f), device="cpu")
    return torch.load(str(f), map_location="cpu", weights_only=True)


def rename_keys(state: dict[str, Any], renames: list[tuple[str, str]]) -> dict[str, Any]:
    if not renames:
        return state
    out = {}
    for k, v in state.items():
        for old, new in renames:
            k = k.replace(old, new)
        out[k] = v
    return out
