"""The Marlin-style tensor-core GEMM for 4- and 8-bit GPTQ layers, from Python.

``repack`` runs once at load time (``torch.ops.gptq.marlin_repack``) and decides the two load-time
facts the kernel can use: a symmetric layer (every zero point 2^(bits-1)) needs no zero loads, and a
layer without act-order needs no column gather of x. ``gemm`` then computes ``x @ W.T`` through
``torch.ops.gptq.marlin_gemm``. See include/gptq/marlin.h for the layout and the limits.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..format import _format_id

MODES = {"auto": 0, "fused": 1, "dense": 2}
"""marlin_gemm's ``mode``: auto picks by the number of rows; fused forces the tensor-core kernel,
dense forces dequantize + cuBLAS."""


class MarlinWeights(NamedTuple):
    qweight: torch.Tensor  # int32 [N_pad/64, K_pad*2*bits], the tile layout
    scales: torch.Tensor  # [G_pad, N_pad], columns permuted per 64-column tile
    zeros: torch.Tensor | None  # like scales; None for a symmetric layer
    perm: torch.Tensor | None  # int32 [K]; None without act-order
    bits: int
    group_size: int
    in_features: int
    out_features: int


def repack(
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    g_idx: torch.Tensor | None,
    bits: int,
    group_size: int = -1,
    checkpoint_format: str = "gptq",
) -> MarlinWeights:
    """Repacks a GPTQ checkpoint layer for :func:`gemm` (on the inputs' device, exact)."""
    qw, sc, zp, perm = torch.ops.gptq.marlin_repack(
        qweight, qzeros, scales, g_idx, bits, group_size, _format_id(checkpoint_format)
    )
    K = perm.shape[0]
    symmetric = bool((zp == 2 ** (bits - 1)).all()) if zp.numel() else True
    identity = bool((perm == torch.arange(K, device=perm.device, dtype=perm.dtype)).all())
    return MarlinWeights(
        qw, sc, None if symmetric else zp, None if identity else perm, bits, group_size, K, qweight.shape[1]
    )


def gemm(x: torch.Tensor, w: MarlinWeights, mode: str = "auto") -> torch.Tensor:
    """``x [..., K] @ W.T -> [..., N]`` in x's dtype (fp16 or bf16, CUDA)."""
    return torch.ops.gptq.marlin_gemm(
        x, w.qweight, w.scales, w.zeros, w.perm, w.bits, w.group_size, w.out_features, MODES[mode]
    )
