"""Perplexity with the standard protocol (the one the GPTQ paper uses for WikiText-2).

Join the documents with "\\n\\n", tokenize once, cut into non-overlapping windows of `seqlen` tokens
(the model's maximum if smaller), drop the tail, average the next-token negative log-likelihood over
every predicted position (seqlen - 1 per window), exponentiate.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch


@dataclass
class Perplexity:
    ppl: float
    nll: float  # mean negative log-likelihood per predicted token (nats)
    windows: int
    predicted_tokens: int
    seconds: float
    protocol: dict = field(default_factory=dict)

    def __float__(self) -> float:
        return self.ppl

    def __str__(self) -> str:
        return f"{self.ppl:.3f}"


def _max_positions(model) -> int | None:
    cfg = getattr(model, "config", None)
    for k in ("max_position_embeddings", "n_positions", "seq_length"):
        v = getattr(cfg, k, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def tokenize(tokenizer, text) -> torch.Tensor:
    if not isinstance(text, str):
        text = "\n\n".join(text)
    ids = tokenizer(text, return_tensors="pt")["input_ids"][0]
    return ids


@torch.no_grad()
def perplexity(model, tokenizer, text, seqlen: int = 2048, max_windows: int | None = None,
               device: torch.device | str | None = None, ids: torch.Tensor | None = None,
               progress: bool = False) -> Perplexity:
    """Perplexity of `model` (a transformers causal LM or our wrapper) on `text` (a string or a list of
    documents), with the protocol above. `max_windows` keeps only the first windows (say so when
    reporting). Returns the figure and the protocol (tokens, windows, context)."""
    hf = model.model if hasattr(model, "quantize_config") and hasattr(model, "model") else model
    max_pos = _max_positions(hf)
    ctx = min(seqlen, max_pos) if max_pos else seqlen
    if ids is None:
        ids = tokenize(tokenizer, text)
    n_windows = ids.numel() // ctx
    if max_windows is not None:
        n_windows = min(n_windows, max_windows)
    if n_windows < 1:
        raise ValueError(f"perplexity: the text has {ids.numel()} tokens, fewer than one window of {ctx}")
    if device is None:
        try:
            device = next(hf.parameters()).device
        except StopIteration:
            device = torch.device("cpu")
    was_training = hf.training
    hf.eval()
    total = 0.0
    count = 0
    t0 = time.perf_counter()
    try:
        from tqdm.auto import tqdm
        it = tqdm(range(n_windows), desc="perplexity", unit="window", disable=not progress, leave=False)
    except ImportError:  # pragma: no cover
        it = range(n_windows)
    try:
        for w in it:
            x = ids[w * ctx:(w + 1) * ctx].unsqueeze(0).to(device)
            logits = hf(input_ids=x, use_cache=False).logits[0, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum")
            total += float(nll)
            count += ctx - 1
            del logits
    finally:
        hf.train(was_training)
    secs = time.perf_counter() - t0
    mean = total / count
    protocol = {
        "context": ctx, "stride": ctx, "windows": n_windows, "predicted_tokens": count,
        "text_tokens": int(ids.numel()), "tail_dropped": int(ids.numel() - n_windows * ctx) if max_windows is None
        else None, "first_windows_only": max_windows is not None and n_windows < ids.numel() // ctx,
        "tokenizer": type(tokenizer).__name__ if tokenizer is not None else None,
        "joined_with": "\\n\\n",
    }
    return Perplexity(ppl=math.exp(mean), nll=mean, windows=n_windows, predicted_tokens=count, seconds=secs,
                      protocol=protocol)
