"""The model pipeline, end to end on tiny random decoders of every supported family (CPU):
quantize -> save -> from_quantized, and the reloaded model computes what the in-memory one does.

References and tolerances:
  * reloaded vs in-memory quantized model: both run the same QuantLinear on the same tensors (the
    float weights are fp16-representable, scales are held at their fp16 values in memory), so the
    logits must be bit-identical;
  * 8-bit quantized vs float model: see test_8bit_close_to_float;
  * 4-bit: GPTQ is checked against RTN on the same grid: its layer-output error must not be larger.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch

from conftest import rel_error
from tiny_models import FAMILIES, byte_tokenizer, calibration, probe, tiny_model

gptq = pytest.importorskip("gptq")
from gptq import AutoGPTQForCausalLM, BaseQuantizeConfig  # noqa: E402

# act-order on half of the families, so both g_idx layouts go through save/load
DESC_ACT = {f: i % 2 == 0 for i, f in enumerate(FAMILIES)}


def _logits(model, x):
    with torch.no_grad():
        return model(input_ids=x).logits.float()


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """family -> (float logits, in-memory quantized wrapper, checkpoint folder)."""
    cache = {}

    def get(family):
        if family not in cache:
            float_model = tiny_model(family)
            ref = _logits(float_model, probe())
            qc = BaseQuantizeConfig(bits=4, group_size=32, desc_act=DESC_ACT[family])
            model = AutoGPTQForCausalLM.from_pretrained(float_model, qc)
            model.quantize(calibration(), batch_size=2, progress=False)
            folder = tmp_path_factory.mktemp(family) / "ckpt"
            model.save_quantized(folder)
            cache[family] = (ref, model, folder)
        return cache[family]

    return get


@pytest.mark.parametrize("family", FAMILIES)
def test_quantize_save_reload_equal(family, quantized):
    from gptq.nn import QuantLinear

    ref, model, folder = quantized(family)
    n_quant = sum(isinstance(m, QuantLinear) for m in model.model.modules())
    assert n_quant >= 4 * 2, f"{family}: only {n_quant} QuantLinear modules"
    # every linear of the decoder layers is quantized, except those the format cannot hold
    from gptq.modeling.layout import find_layers_block, quantizable

    block, layers = find_layers_block(model.model)
    left = {f"{block}.{i}.{n}" for i, layer in enumerate(layers) for n, m in layer.named_modules() if quantizable(m)}
    assert left == set(model.quant_stats.skipped)
    x = probe()
    before = _logits(model, x)
    assert torch.isfinite(before).all()
    reloaded = AutoGPTQForCausalLM.from_quantized(folder, device="cpu", torch_dtype=torch.float32)
    after = _logits(reloaded, x)
    assert torch.equal(before, after), f"{family}: reloaded logits differ by {(before - after).abs().max():.3g}"
    # 4-bit with random weights moves the logits, but stays in the neighbourhood of the float model
    assert rel_error(before, ref) < 0.5, f"{family}: 4-bit logits far from float ({rel_error(before, ref):.3f})"


def test_saved_files_and_transformers_config(quantized):
    from transformers import GPTQConfig

    _, model, folder = quantized("llama")
    names = sorted(p.name for p in folder.iterdir())
    for want in ("config.json", "model.safetensors", "quant_log.csv", "quantize_config.json"):
        assert want in names
    cfg = json.loads((folder / "config.json").read_text())
    q = cfg["quantization_config"]
    assert q["quant_method"] == "gptq" and q["checkpoint_format"] == "gptq"
    hf = GPTQConfig.from_dict(q)
    assert (hf.bits, hf.group_size, hf.desc_act, hf.sym) == (4, 32, DESC_ACT["llama"], True)
    assert hf.block_name_to_quantize == "model.layers"
    qc = json.loads((folder / "quantize_config.json").read_text())
    assert qc["bits"] == 4 and qc["group_size"] == 32 and qc["model_file_base_name"] == "model"
    log = (folder / "quant_log.csv").read_text().splitlines()
    assert log[0] == "layer,module,loss,damp_percent,seconds,samples,method"
    assert len(log) == 1 + 2 * 7  # 2 layers x 7 linears
    # the 6 calibration sequences, padding excluded: 5 x 24 + 15 tokens
    assert {row.split(",")[5] for row in log[1:]} == {str(5 * 24 + 15)}
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        meta = f.metadata()
        assert meta["format"] == "pt" and meta["gptq_bits"] == "4"
        assert f.get_slice("model.layers.0.self_attn.q_proj.scales").get_dtype() == "F16"
        assert f.get_slice("model.layers.0.self_attn.q_proj.qweight").get_dtype() == "I32"


def test_8bit_close_to_float():
    """8-bit codes have 16x finer steps than 4-bit ones, so the logit error must shrink by about that
    much. These random-weight models amplify weight noise about 4x (0.5% relative weight noise moves
    the logits by ~2%), hence 5e-2 for 8-bit with g32 (measured 0.023)."""
    x = probe()
    ref = _logits(tiny_model("llama"), x)
    errs = {}
    for bits in (8, 4):
        model = AutoGPTQForCausalLM.from_pretrained(tiny_model("llama"),
                                                    BaseQuantizeConfig(bits=bits, group_size=32, desc_act=False))
        model.quantize(calibration(), progress=False)
        errs[bits] = rel_error(_logits(model, x), ref)
    assert errs[8] < 5e-2, errs
    assert errs[8] < errs[4] / 8, errs


def test_gptq_beats_rtn_on_layer_outputs():
    """On the calibration data, GPTQ's objective ||W X - Q X|| is what it minimises; the quantized
    model's logits on calibration text must be at least as close to float as RTN's (same grid)."""
    from gptq.modeling.quantizer import make_batches, normalize_examples

    calib = calibration(n=8, length=32, pad_last=False)
    ids = torch.tensor([c["input_ids"] for c in calib])
    float_model = tiny_model("llama")
    ref = _logits(float_model, ids)
    qc = BaseQuantizeConfig(bits=3, group_size=-1, desc_act=True)
    g = AutoGPTQForCausalLM.from_pretrained(tiny_model("llama"), qc)
    g.quantize(calib, progress=False)
    err_gptq = rel_error(_logits(g, ids), ref)
    # RTN of every linear on the same 3-bit grid
    rtn = tiny_model("llama")
    with torch.no_grad():
        for name, m in rtn.named_modules():
            if isinstance(m, torch.nn.Linear) and "layers" in name:
                m.weight.copy_(gptq.rtn_quantize_weight(m.weight, qc).dequantize())
    err_rtn = rel_error(_logits(rtn, ids), ref)
    assert err_gptq < err_rtn, f"GPTQ {err_gptq:.4f} vs RTN {err_rtn:.4f}"
    assert normalize_examples(calib) and make_batches(normalize_examples(calib), 3, 0)


def test_sharded_save_and_load(quantized, tmp_path):
    _, model, _ = quantized("qwen2")
    folder = tmp_path / "sharded"
    model.save_quantized(folder, max_shard_size="40KB")
    shards = sorted(p.name for p in folder.glob("model-*.safetensors"))
    assert len(shards) > 2 and (folder / "model.safetensors.index.json").is_file()
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    reloaded = AutoGPTQForCausalLM.from_quantized(folder, device="cpu", torch_dtype=torch.float32)
    x = probe()
    assert torch.equal(_logits(model, x), _logits(reloaded, x))
    if not torch.cuda.is_available():  # accelerate's device_map path; on a CPU machine the model stays there
        auto = AutoGPTQForCausalLM.from_quantized(folder, device_map="auto")
        assert auto.device.type == "cpu" and next(auto.model.parameters()).dtype == torch.float32
        assert torch.equal(_logits(model, x), _logits(auto, x))


def _rewrite_config(folder, **changes):
    cfg = json.loads((folder / "config.json").read_text())
    cfg["quantization_config"].update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


def test_checkpoint_layouts_of_other_tools(quantized, tmp_path):
    """AutoGPTQ's old file name, optimum's config.json-only layout, GPTQModel's quant_config.json with
    meta and gptq_v2 zeros, and .bin weights all load to the same model."""
    from safetensors.torch import load_file, save_file

    _, model, _ = quantized("llama")
    x = probe()
    want = _logits(model, x)

    # AutoGPTQ: gptq_model-4bit-32g.safetensors, base name only in quantize_config.json
    a = tmp_path / "autogptq"
    model.save_quantized(a, model_base_name="gptq_model-4bit-32g")
    assert (a / "gptq_model-4bit-32g.safetensors").is_file()
    qc = json.loads((a / "quantize_config.json").read_text())
    qc.pop("model_file_base_name")
    (a / "quantize_config.json").write_text(json.dumps(qc))
    assert torch.equal(want, _logits(AutoGPTQForCausalLM.from_quantized(a, device="cpu", torch_dtype=torch.float32), x))

    # optimum/transformers: no quantize_config.json, sharded model-0000i-of-0000n names
    o = tmp_path / "optimum"
    model.save_quantized(o, max_shard_size="100KB")
    (o / "quantize_config.json").unlink()
    assert torch.equal(want, _logits(AutoGPTQForCausalLM.from_quantized(o, device="cpu", torch_dtype=torch.float32), x))

    # GPTQModel v2 format: quant_config.json with format/meta keys and zeros stored without the -1
    v = tmp_path / "gptqmodel_v2"
    model.save_quantized(v)
    (v / "quantize_config.json").unlink()
    (v / "quant_config.json").write_text(json.dumps({
        "bits": 4, "group_size": 32, "desc_act": DESC_ACT["llama"], "sym": True, "lm_head": False,
        "quant_method": "gptq", "format": "gptq_v2", "pack_dtype": "int32",
        "meta": {"quantizer": ["gptqmodel:2.2.0"], "damp_percent": 0.01, "static_groups": False,
                 "true_sequential": True}}))
    _rewrite_config(v, checkpoint_format="gptq_v2", format="gptq_v2")
    sd = load_file(str(v / "model.safetensors"))
    for k in list(sd):
        if k.endswith(".qzeros"):
            sd[k] = gptq.convert_qzeros(sd[k], 4, "gptq", "gptq_v2")
    save_file(sd, str(v / "model.safetensors"), metadata={"format": "pt"})
    m2 = AutoGPTQForCausalLM.from_quantized(v, device="cpu", torch_dtype=torch.float32)
    assert m2.quantize_config.checkpoint_format == "gptq_v2"
    assert torch.equal(want, _logits(m2, x))

    # .bin weights
    b = tmp_path / "bin"
    model.save_quantized(b, use_safetensors=False)
    assert (b / "model.bin").is_file()
    assert torch.equal(want, _logits(AutoGPTQForCausalLM.from_quantized(b, device="cpu", torch_dtype=torch.float32,
                                                                        use_safetensors=False), x))


def test_atomic_save_leaves_no_folder(quantized, tmp_path, monkeypatch):
    import gptq.modeling.checkpoint as ckpt

    _, model, _ = quantized("llama")
    real = ckpt._write_weights

    def crash(state, folder, *a, **k):
        real(dict(list(state.items())[:3]), folder, *a, **k)
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ckpt, "_write_weights", crash)
    target = tmp_path / "out"
    with pytest.raises(OSError, match="simulated"):
        model.save_quantized(target)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    # a failed save over an existing checkpoint keeps the old one intact
    monkeypatch.setattr(ckpt, "_write_weights", real)
    model.save_quantized(target)
    (target / "README.md").write_text("mine")
    before = sorted(p.name for p in target.iterdir())
    monkeypatch.setattr(ckpt, "_write_weights", crash)
    with pytest.raises(OSError):
        model.save_quantized(target)
    assert sorted(p.name for p in target.iterdir()) == before
    monkeypatch.setattr(ckpt, "_write_weights", real)
    model.save_quantized(target)  # overwrite keeps the user's other files
    assert (target / "README.md").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_moe_expert_without_tokens_falls_back_to_rtn(caplog):
    float_model = tiny_model("mixtral")
    for layer in float_model.model.layers:  # the router never picks expert 3
        router = layer.mlp.gate
        orig = router.forward

        def forward(h, orig=orig, router=router):
            logits, _, _ = orig(h)
            logits = logits.clone()
            logits[:, 3] = float("-inf")
            probs = torch.softmax(logits.float(), dim=-1)
            top, idx = torch.topk(probs, router.top_k, dim=-1)
            top = top / top.sum(-1, keepdim=True)
            return logits, top.to(logits.dtype), idx
        router.forward = forward
    model = AutoGPTQForCausalLM.from_pretrained(float_model, BaseQuantizeConfig(bits=4, group_size=32))
    with caplog.at_level(logging.WARNING, logger="gptq"):
        log = model.quantize(calibration(), progress=False)
    rtn = {(r["layer"], r["module"]) for r in log if r["method"].startswith("rtn")}
    assert rtn == {(li, f"mlp.experts.3.{w}") for li in range(2) for w in ("w1", "w2", "w3")}
    assert "no calibration tokens" in caplog.text
    assert all(r["samples"] > 0 for r in log if r["method"] == "gptq")


def test_unknown_layout_error():
    from transformers import PretrainedConfig

    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = PretrainedConfig(num_hidden_layers=3)
            self.blocks = torch.nn.Sequential(*(torch.nn.Linear(32, 32) for _ in range(3)))

    with pytest.raises(ValueError, match=r"cannot find the decoder layers.*register_layout"):
        AutoGPTQForCausalLM.from_pretrained(Odd(), BaseQuantizeConfig())


def test_string_examples_with_tokenizer_and_from_pretrained_path(tmp_path):
    tok = byte_tokenizer()
    src = tmp_path / "float"
    tiny_model("gpt2").save_pretrained(src)
    tok.save_pretrained(src)
    model = AutoGPTQForCausalLM.from_pretrained(src, BaseQuantizeConfig(bits=4, group_size=32),
                                                torch_dtype=torch.float32)
    texts = ["The quick brown fox jumps over the lazy dog.", "Persuasion, by Jane Austen, 1818."]
    model.quantize(texts, progress=False)  # tokenizer loaded from the model folder
    out = tmp_path / "q"
    model.save_quantized(out)
    assert (out / "tokenizer.json").is_file()
    again = AutoGPTQForCausalLM.from_quantized(out, device="cpu", torch_dtype=torch.float32)
    text = again.generate("The quick", max_new_tokens=5, do_sample=False)
    assert isinstance(text, str) and text.startswith("The quick")


def test_kernel_flags_map_to_backends(caplog):
    """AutoGPTQ's kernel flags become the backend our registry names for that kernel, and the log
    says so: triton and cuda read the checkpoint layout as our autogptq kernel does; exllama(v2)
    maps to exllamav2; marlin to marlin when its ops are built."""
    from gptq.modeling import resolve_backend
    from gptq.nn import backends as B

    with caplog.at_level(logging.INFO, logger="gptq"):
        assert resolve_backend("auto") == "auto"
        assert resolve_backend("auto", use_triton=True) == B.ALIASES["triton"] == "autogptq"
        assert "'triton'" in caplog.text and "'autogptq'" in caplog.text
        assert resolve_backend("auto", use_exllama=True) == "exllamav2"
        assert resolve_backend("auto", disable_exllama=True, disable_exllamav2=True) == "autogptq"
        expected_marlin = "marlin" if "marlin" in B.BACKENDS else "exllamav2"
        assert resolve_backend("auto", use_marlin=True) == expected_marlin
        assert resolve_backend("auto", trainable=True) == "auto_trainable"
        assert resolve_backend("torch", use_marlin=True) == "torch"


def test_perplexity_matches_transformers_loss():
    from gptq.eval import perplexity

    model = tiny_model("llama")
    ids = torch.randint(3, 256, (3 * 32 + 5,), generator=torch.Generator().manual_seed(0))
    res = perplexity(model, None, None, seqlen=32, ids=ids)
    assert res.windows == 3 and res.predicted_tokens == 3 * 31
    with torch.no_grad():
        losses = [model(input_ids=ids[w * 32:(w + 1) * 32][None], labels=ids[w * 32:(w + 1) * 32][None]).loss
                  for w in range(3)]
    want = torch.exp(torch.stack(losses).mean()).item()
    assert abs(res.ppl - want) / want < 1e-5


def test_legacy_mixtral_names_load(quantized, tmp_path):
    """Mixtral GPTQ checkpoints made with transformers 4 name the MoE block `block_sparse_moe`."""
    import shutil

    from safetensors.torch import load_file, save_file

    _, model, folder = quantized("mixtral")
    legacy = tmp_path / "legacy"
    shutil.copytree(folder, legacy)
    sd = load_file(str(legacy / "model.safetensors"))
    assert any(".mlp.experts.0.w1.qweight" in k for k in sd)
    save_file({k.replace(".mlp.", ".block_sparse_moe."): v for k, v in sd.items()}, str(legacy / "model.safetensors"),
              metadata={"format": "pt"})
    x = probe()
    reloaded = AutoGPTQForCausalLM.from_quantized(legacy, device="cpu", torch_dtype=torch.float32)
    assert torch.equal(_logits(model, x), _logits(reloaded, x))


def test_loaded_checkpoint_saves_again(quantized, tmp_path):
    """load -> save -> load gives the same model (no quant_log without a quantization run)."""
    _, model, folder = quantized("gpt2")
    first = AutoGPTQForCausalLM.from_quantized(folder, device="cpu", torch_dtype=torch.float32)
    again = tmp_path / "again"
    first.save_quantized(again)
    assert not (again / "quant_log.csv").exists()
    second = AutoGPTQForCausalLM.from_quantized(again, device="cpu", torch_dtype=torch.float32)
    x = probe()
    assert torch.equal(_logits(model, x), _logits(second, x))


def test_quantize_to_gptq_v2_format(quantized, tmp_path):
    """checkpoint_format="gptq_v2" stores zeros without the v1 "minus one" and decodes to the same model."""
    ref, model, _ = quantized("llama")
    qc = BaseQuantizeConfig(bits=4, group_size=32, desc_act=DESC_ACT["llama"], checkpoint_format="gptq_v2")
    v2 = AutoGPTQForCausalLM.from_pretrained(tiny_model("llama"), qc)
    v2.quantize(calibration(), batch_size=2, progress=False)
    x = probe()
    assert torch.equal(_logits(model, x), _logits(v2, x))
    v2.save_quantized(tmp_path / "v2")
    cfg = json.loads((tmp_path / "v2" / "config.json").read_text())["quantization_config"]
    assert cfg["checkpoint_format"] == "gptq_v2"
    from safetensors.torch import load_file

    z = load_file(str(tmp_path / "v2" / "model.safetensors"))["model.layers.0.self_attn.q_proj.qzeros"]
    assert (z == 0x88888888 - 2**32).all()  # sym 4-bit zero point 8 in every nibble (v1 stores 7)
    back = AutoGPTQForCausalLM.from_quantized(tmp_path / "v2", device="cpu", torch_dtype=torch.float32)
    assert torch.equal(_logits(model, x), _logits(back, x))
