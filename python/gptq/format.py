"""The GPTQ checkpoint format from Python: bit packing and dequantization.

Layout (the Hugging Face GPTQ format; see include/gptq/format.h): a layer with weight W [N, K]
(N = out_features, K = in_features) is stored as ``qweight`` int32 [K*bits/32, N], ``qzeros`` int32
[G, N*bits/32], ``scales`` [G, N] and ``g_idx`` int32 [K], with
``W[n, k] = scales[g, n] * (q[k, n] - z[g, n])``, ``g = g_idx[k]``.
"""

from __future__ import annotations

import torch

CHECKPOINT_FORMATS = {"gptq": 1, "gptq_v2": 2}
"""checkpoint_format names and the integer the ops take: "gptq" stores zeros minus one (v1)."""


def _format_id(checkpoint_format: str) -> int:
    try:
        return CHECKPOINT_FORMATS[checkpoint_format]
    except KeyError:
        raise ValueError(
            f"checkpoint_format must be one of {sorted(CHECKPOINT_FORMATS)}, got {checkpoint_format!r}"
        ) from None


def pack_rows(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Packs integer codes [R, C] along dim 0 into int32 [R*bits/32, C] (the qweight layout)."""
    return torch.ops.gptq.pack_rows(codes, bits)


def unpack_rows(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse of :func:`pack_rows`: int32 [R*bits/32, C] -> int32 codes [R, C]."""
    return torch.ops.gptq.unpack_rows(packed, bits)


def pack_cols(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Packs integer codes [R, C] along dim 1 into int32 [R, C*bits/32] (the qzeros layout)."""
    return torch.ops.gptq.pack_cols(codes, bits)


def unpack_cols(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse of :func:`pack_cols`."""
    return torch.ops.gptq.unpack_cols(packed, bits)


def dequantize(
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    g_idx: torch.Tensor | None,
    bits: int,
    group_size: int = -1,
    checkpoint_format: str = "gptq",
) -> torch.Tensor:
    """Float weight W [out_features, in_features] of a packed GPTQ layer, in ``scales.dtype``.

    ``g_idx`` may be None, in which case input channel k belongs to group ``k // group_size``.
    """
    return torch.ops.gptq.dequantize(
        qweight, qzeros, scales, g_idx, bits, group_size, _format_id(checkpoint_format)
    )
