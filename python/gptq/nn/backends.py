"""Kernel backends of QuantLinear and the automatic choice among them.

A backend turns a layer's checkpoint tensors into whatever its kernel wants (once, at load: repacking,
permutations) and computes y = x W^T + b. `select_backend` picks the fastest valid backend for the
layer's bits, group size, act-order, device and GPU architecture, or honours an explicit name, or
refuses it with the reason.

Every backend here is registered in BACKENDS in order of preference for backend="auto".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

if TYPE_CHECKING:
    from .qlinear import QuantLinear

logger = logging.getLogger("gptq")


@dataclass(frozen=True)
class Backend:
    name: str
    # (layer, device) -> None when usable, else the reason it is not
    unsupported_reason: Callable[["QuantLinear", torch.device], str | None]
    # layer -> None; builds the backend's own buffers from the checkpoint tensors
    prepare: Callable[["QuantLinear"], None]
    # (layer, x [M, K]) -> y [M, N] without bias
    forward: Callable[["QuantLinear", torch.Tensor], torch.Tensor]
    trainable: bool = False  # the input gradient flows through forward (for PEFT/QLoRA)


# ---- torch: dequantize to a dense weight, then matmul ------------------------------------------------
def _torch_unsupported(layer: "QuantLinear", device: torch.device) -> str | None:
    return None  # every bit width, group size and act-order, on CPU and CUDA


def _torch_prepare(layer: "QuantLinear") -> None:
    pass


def _torch_forward(layer: "QuantLinear", x: torch.Tensor) -> torch.Tensor:
    w = layer.dequantize_weight()  # [N, K] in scales' dtype; not cached, to keep the 4x memory saving
    return torch.matmul(x.to(w.dtype), w.t())


BACKENDS: dict[str, Backend] = {
    "torch": Backend("torch", _torch_unsupported, _torch_prepare, _torch_forward, trainable=True),
}

# AutoGPTQ's and GPTQModel's names for kernels, mapped to ours (filled in as kernels land).
ALIASES: dict[str, str] = {"cpu": "torch", "pytorch": "torch"}


def available_backends() -> list[str]:
    return list(BACKENDS)


def select_backend(layer: "QuantLinear", backend: str, device: torch.device, trainable: bool = False) -> Backend:
    """The backend for `layer` on `device`: the first usable one in preference order for "auto"
    (or "auto_trainable"), else the named one, which must be usable."""
    name = ALIASES.get(backend, backend)
    if name in ("auto", "auto_trainable"):
        trainable = trainable or name == "auto_trainable"
        reasons = []
        for b in BACKENDS.values():
            if trainable and not b.trainable:
                reasons.append(f"{b.name}: not trainable")
                continue
            why = b.unsupported_reason(layer, device)
            if why is None:
                return b
            reasons.append(f"{b.name}: {why}")
        raise RuntimeError(f"QuantLinear({layer.describe()}): no usable backend on {device}: " + "; ".join(reasons))
    if name not in BACKENDS:
        raise ValueError(f"QuantLinear: backend must be 'auto', 'auto_trainable' or one of {sorted(BACKENDS)}, got {backend!r}")
    b = BACKENDS[name]
    why = b.unsupported_reason(layer, device)
    if why is not None:
        raise ValueError(f"QuantLinear({layer.describe()}): backend {name!r} cannot run on {device}: {why}")
    if trainable and not b.trainable:
        raise ValueError(f"QuantLinear({layer.describe()}): backend {name!r} does not support training")
    return b
