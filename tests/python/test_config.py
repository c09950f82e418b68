"""Specification of BaseQuantizeConfig: AutoGPTQ's fields and defaults plus ours, validation that
names the field, the value and the allowed set, the dict/file formats of AutoGPTQ, GPTQModel and
transformers (api-and-format.md §1.1, §2.7), and the 1:1 mirror of the C++ gptq::QuantizeConfig."""

import json
import logging
from dataclasses import fields

import pytest

import gptq
from gptq import BaseQuantizeConfig


def test_defaults_are_autogptqs_plus_ours():
    c = BaseQuantizeConfig()
    assert (c.bits, c.group_size, c.damp_percent, c.desc_act, c.static_groups, c.sym, c.true_sequential) == (
        4, -1, 0.01, True, False, True, True)
    assert (c.model_name_or_path, c.model_file_base_name, c.checkpoint_format, c.quant_method) == (
        None, None, "gptq", "gptq")
    assert (c.damp_auto_increment, c.mse, c.block_size) == (0.0025, 0.0, 128)


@pytest.mark.parametrize("kwargs,message", [
    (dict(bits=5), r"bits must be one of \{2, 3, 4, 8\}, got 5"),
    (dict(group_size=0), r"group_size must be -1 or a power of two >= 16 .*got 0"),
    (dict(group_size=100), r"group_size must be -1 or a power of two >= 16 .*got 100"),
    (dict(damp_percent=0.0), r"damp_percent must lie in the open interval \(0, 1\), got 0"),
    (dict(damp_percent=1.5), r"damp_percent must lie in the open interval \(0, 1\), got 1.5"),
    (dict(damp_auto_increment=-0.1), r"damp_auto_increment must lie in \[0, 1\)"),
    (dict(mse=-1.0), r"mse must be 0 \(off\) or a positive, finite norm exponent"),
    (dict(block_size=100), r"block_size must be a power of two in \[16, 1024\], got 100"),
    (dict(checkpoint_format="awq_gemm"), r"checkpoint_format must be one of \{\"gptq\", \"gptq_v2\", \"marlin\"\}, got \"awq_gemm\""),
    (dict(quant_method="awq"), r"quant_method must be one of \{\"gptq\"\}, got \"awq\""),
    (dict(bits="4"), r"bits must be an integer, got '4'"),
    (dict(sym="yes"), r"sym must be true or false, got 'yes'"),
])
def test_bad_values_name_field_value_and_allowed_set(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BaseQuantizeConfig(**kwargs)


def test_native_mirror_has_every_field():
    c = BaseQuantizeConfig(bits=3, group_size=64, sym=False, desc_act=False, mse=2.4, block_size=64,
                           model_name_or_path="m", checkpoint_format="gptq_v2")
    n = c.to_native()
    for f in fields(c):
        value = getattr(c, f.name)
        assert getattr(n, f.name) == ("" if value is None else value), f.name
    n.bits = 7
    with pytest.raises(ValueError, match="bits must be one of"):
        n.validate()


def test_dict_round_trip_and_legacy_keys(caplog):
    c = BaseQuantizeConfig(bits=8, group_size=128, desc_act=False)
    assert BaseQuantizeConfig.from_dict(c.to_dict()) == c
    with caplog.at_level(logging.INFO, logger="gptq.config"):
        d = BaseQuantizeConfig.from_dict({"W_BIT": 4, "q_group_size": 128, "zero_point": True, "version": "gemm"})
    assert (d.bits, d.group_size) == (4, 128)
    assert "ignoring keys version, zero_point" in caplog.text


def test_formats_of_other_tools():
    # AutoGPTQ v0.7.1 marlin flag
    assert BaseQuantizeConfig.from_dict({"bits": 4, "is_marlin_format": True}).checkpoint_format == "marlin"
    assert BaseQuantizeConfig.from_dict({"bits": 4, "quant_method": "marlin"}).checkpoint_format == "marlin"
    # GPTQModel: format/method keys and settings under meta
    g = BaseQuantizeConfig.from_dict({"bits": 4, "group_size": 128, "desc_act": False, "sym": True,
                                      "format": "gptq_v2", "method": "gptq", "pack_dtype": "int32",
                                      "meta": {"damp_percent": 0.05, "damp_auto_increment": 0.01,
                                               "static_groups": True, "true_sequential": False, "mse": 2.4}})
    assert (g.checkpoint_format, g.damp_percent, g.damp_auto_increment, g.static_groups, g.true_sequential,
            g.mse) == ("gptq_v2", 0.05, 0.01, True, False, 2.4)
    # transformers' GPTQConfig.to_dict() (a real Qwen2.5 GPTQ config)
    t = BaseQuantizeConfig.from_dict({"batch_size": 1, "bits": 4, "block_name_to_quantize": None,
                                      "cache_block_outputs": True, "damp_percent": 0.01, "dataset": None,
                                      "desc_act": False, "exllama_config": {"version": 1}, "group_size": 128,
                                      "quant_method": "gptq", "sym": True, "true_sequential": True,
                                      "use_exllama": True})
    assert (t.bits, t.group_size, t.desc_act) == (4, 128, False)


def test_from_pretrained_reads_the_first_file_found(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": {"bits": 3, "group_size": 64}}))
    assert BaseQuantizeConfig.from_pretrained(tmp_path).bits == 3
    (tmp_path / "quant_config.json").write_text(json.dumps({"w_bit": 8}))
    assert BaseQuantizeConfig.from_pretrained(tmp_path).bits == 8
    BaseQuantizeConfig(bits=2, group_size=32).save_pretrained(tmp_path)
    assert BaseQuantizeConfig.from_pretrained(tmp_path) == BaseQuantizeConfig(bits=2, group_size=32)
    assert not list(tmp_path.glob(".quantize_config.*"))  # the temp file was renamed away


def test_from_pretrained_error_names_folder_and_files(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(FileNotFoundError, match=r"no quantization config in .*looked for quantize_config.json, "
                                                 r"quant_config.json and a 'quantization_config' entry"):
        BaseQuantizeConfig.from_pretrained(tmp_path)


def test_quantize_weight_accepts_a_dict():
    import torch  # noqa: PLC0415

    W = torch.randn(32, 64)
    q = gptq.quantize_weight(W, torch.eye(64), {"bits": 4, "group_size": 32})
    assert q.bits == 4 and q.group_size == 32
    with pytest.raises(ValueError, match="group_size"):
        gptq.quantize_weight(W, torch.eye(64), {"group_size": 33})
