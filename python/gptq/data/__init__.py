"""Texts shipped with gptq, so the demo and quick checks run offline (provenance: _build.py).

calibration_texts(): 160 passages (~1600 characters each) of public-domain English, half from US
    State of the Union addresses 1790-2000, half from five Jane Austen novels. Calibration only.
eval_text(name): held-out text, never used for calibration or for choosing defaults:
    "sotu_2001_2021": the first 79 577 characters (5 addresses) of the State of the Union
        addresses 2001-2021;
    "persuasion": the first 95 984 characters of Jane Austen's Persuasion.
"""

from __future__ import annotations

import gzip
import json
from importlib import resources

EVAL_TEXTS = {"sotu_2001_2021": "sotu_2001_2021.txt.gz", "persuasion": "persuasion.txt.gz"}


def _read(name: str) -> str:
    with resources.files(__name__).joinpath(name).open("rb") as f:
        return gzip.decompress(f.read()).decode("utf-8")


def calibration_texts() -> list[str]:
    return [json.loads(line)["text"] for line in _read("calibration.jsonl.gz").splitlines() if line]


def calibration_sources() -> list[str]:
    return [json.loads(line)["source"] for line in _read("calibration.jsonl.gz").splitlines() if line]


def eval_text(name: str) -> str:
    if name not in EVAL_TEXTS:
        raise ValueError(f"eval_text: unknown text {name!r}; choose one of {sorted(EVAL_TEXTS)}")
    return _read(EVAL_TEXTS[name])


def calibration_examples(tokenizer, n_samples: int = 128, seqlen: int = 256, seed: int | None = None) -> list[dict]:
    """`n_samples` tokenizer outputs of at most `seqlen` tokens each, one per passage: the first
    passages in the file's fixed random order, or, with `seed`, passages drawn with
    random.Random(seed) (to measure how results move with the calibration sample). Passages are
    reused if more samples than passages are asked."""
    import random

    texts = calibration_texts()
    order = list(range(len(texts)))
    if seed is not None:
        random.Random(seed).shuffle(order)
    out = []
    for i in range(n_samples):
        enc = tokenizer(texts[order[i % len(texts)]])
        ids = list(enc["input_ids"])[:seqlen]
        out.append({"input_ids": ids, "attention_mask": [1] * len(ids)})
    return out
