"""`gptq quantize` and `gptq eval` on a tiny float model folder (in process, CPU)."""

from __future__ import annotations

import json

import pytest
import torch

from tiny_models import byte_tokenizer, tiny_model

pytest.importorskip("gptq")


def test_cli_quantize_then_eval(tmp_path, capsys):
    from gptq.__main__ import main

    src = tmp_path / "float"
    tiny_model("llama").save_pretrained(src)
    byte_tokenizer().save_pretrained(src)
    text = tmp_path / "calib.txt"
    text.write_text("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
                    "must be in want of a wife. " * 8)
    out = tmp_path / "q"
    rc = main(["quantize", str(src), str(out), "--bits", "4", "--group-size", "32", "--nsamples", "4",
               "--seqlen", "32", "--calibration", str(text), "--dtype", "float32", "--device", "cpu"])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())["quantization_config"]
    assert (cfg["bits"], cfg["group_size"], cfg["desc_act"]) == (4, 32, False)
    assert len((out / "quant_log.csv").read_text().splitlines()) == 1 + 14
    capsys.readouterr()
    rc = main(["eval", str(out), "--text", str(text), "--seqlen", "64", "--dtype", "float32", "--device", "cpu",
               "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    (name, r), = res.items()
    assert r["windows"] >= 2 and r["context"] == 64 and r["ppl"] > 1 and torch.isfinite(torch.tensor(r["ppl"]))


def test_cli_rejects_bad_bits():
    from gptq.__main__ import main

    with pytest.raises(SystemExit):
        main(["quantize", "m", "o", "--bits", "5"])


def test_shipped_texts():
    from gptq.data import EVAL_TEXTS, calibration_examples, calibration_sources, calibration_texts, eval_text

    texts = calibration_texts()
    assert len(texts) == 160 and all(1000 < len(t) <= 1600 for t in texts)
    assert sorted(set(calibration_sources())) == ["austen_train", "sotu_train"]
    assert len(eval_text("sotu_2001_2021")) == 79_577 and len(eval_text("persuasion")) == 95_984
    assert eval_text("persuasion").startswith("Persuasion")
    # no calibration passage appears in the held-out texts
    for name in EVAL_TEXTS:
        held_out = eval_text(name)
        assert not any(t[:200] in held_out for t in texts)
    ex = calibration_examples(byte_tokenizer(), n_samples=3, seqlen=50)
    assert [len(e["input_ids"]) for e in ex] == [50, 50, 50] and ex[0]["attention_mask"] == [1] * 50
    a = calibration_examples(byte_tokenizer(), n_samples=4, seqlen=20, seed=1)
    b = calibration_examples(byte_tokenizer(), n_samples=4, seqlen=20, seed=2)
    assert a == calibration_examples(byte_tokenizer(), n_samples=4, seqlen=20, seed=1) and a != b
    with pytest.raises(ValueError, match="unknown text"):
        eval_text("wikitext2")
