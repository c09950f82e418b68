"""GPTQ for one linear layer from Python: Hessian accumulation, the solver, round-to-nearest.

The work is done in C++ (include/gptq/quantize.h; the inner column loop is one CUDA kernel per
block of columns on a GPU). Results come back packed in checkpoint format "gptq" (the Hugging Face
layout of api-and-format.md §2.1):

    qweight int32 [K*bits/32, N], qzeros int32 [G, N*bits/32] (zeros minus one), scales fp16 [G, N],
    g_idx int32 [K], with W[n, k] = scales[g, n] * (q[k, n] - (stored zero + 1)), g = g_idx[k].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import _C
from .config import BaseQuantizeConfig, as_config
from .format import _format_id
from .format import dequantize as _dequantize


def convert_qzeros(qzeros: torch.Tensor, bits: int, from_format: str, to_format: str) -> torch.Tensor:
    """Converts packed qzeros [G, N*bits/32] between checkpoint formats "gptq" (stored zero - 1,
    modulo 2^bits) and "gptq_v2" (zero as is), exactly in both directions."""
    return torch.ops.gptq.convert_qzeros(qzeros, bits, _format_id(from_format), _format_id(to_format))


class HessianAccumulator:
    """Running H = (2/n) sum_t x_t x_t^T over the counted tokens of a layer's inputs (fp32 [K, K]).

    ``add_batch(x, mask=None)``: x [..., in_features] in any float dtype; mask [...] (x's leading
    shape) of 0/1 or bool marks the tokens to count (0 = padding). The Hessian lives on ``device``,
    or, without one, on the device of the first batch.
    """

    def __init__(self, in_features: int, device: torch.device | str | None = None, name: str | None = None):
        dev = None if device is None else str(torch.device(device))
        self._native = _C.HessianAccumulator(int(in_features), dev, name or "")

    def add_batch(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        self._native.add_batch(x, mask)

    @property
    def hessian(self) -> torch.Tensor:
        return self._native.hessian

    @property
    def nsamples(self) -> int:
        return self._native.nsamples

    @property
    def in_features(self) -> int:
        return self._native.in_features

    def reset(self) -> None:
        self._native.reset()


@dataclass
class QuantizedWeight:
    """A quantized linear weight, packed in checkpoint format "gptq".

    ``loss`` is GPTQ's objective sum (w - q)^2 / [H^-1]_pp / 2 (for RTN: sum (w - q)^2);
    ``damp_percent`` the damping finally used (it may exceed the configured one when the Hessian
    needed more); ``perm`` the act-order column order, or None.
    """

    qweight: torch.Tensor
    qzeros: torch.Tensor
    scales: torch.Tensor
    g_idx: torch.Tensor
    bits: int
    group_size: int
    loss: float
    damp_percent: float
    perm: torch.Tensor | None
    seconds: float
    codes: torch.Tensor  # uint8 [out, in], the integer codes before packing
    zeros: torch.Tensor  # int32 [G, out], the true zero points

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The float weight [out_features, in_features] these tensors decode to, in ``dtype``
        (float32: scales[g, n] * (q - z) exactly, with the stored fp16 scales)."""
        return _dequantize(
            self.qweight, self.qzeros, self.scales.to(dtype), self.g_idx, self.bits, self.group_size, "gptq"
        )

    def qzeros_as(self, checkpoint_format: str) -> torch.Tensor:
        """qzeros in checkpoint format "gptq" (as stored here) or "gptq_v2"."""
        return convert_qzeros(self.qzeros, self.bits, "gptq", checkpoint_format)


def _wrap(result, name: str) -> QuantizedWeight:
    qweight, qzeros, scales, g_idx = result.pack("gptq", name)
    return QuantizedWeight(
        qweight=qweight,
        qzeros=qzeros,
        scales=scales,
        g_idx=g_idx,
        bits=int(result.bits),
        group_size=int(result.group_size),
        loss=float(result.loss),
        damp_percent=float(result.damp_percent),
        perm=result.perm,
        seconds=float(result.seconds),
        codes=result.codes,
        zeros=result.zeros,
    )


def quantize_weight(
    weight: torch.Tensor,
    hessian: torch.Tensor | HessianAccumulator,
    config: BaseQuantizeConfig | dict | None = None,
    name: str | None = None,
) -> QuantizedWeight:
    """GPTQ-quantizes ``weight`` [out, in] given the Hessian [in, in] of its inputs.

    Arithmetic is float32 (TF32 off), or float64 when ``hessian`` is float64. ``name`` names the
    layer in errors. in_features and out_features must be multiples of 32/bits (32 for 3 bits)
    for the packed format.
    """
    cfg = as_config(config)
    if isinstance(hessian, HessianAccumulator):
        hessian = hessian.hessian
    result = _C.gptq_quantize(weight, hessian, cfg.to_native(), name or "")
    return _wrap(result, name or "")


def rtn_quantize_weight(
    weight: torch.Tensor, config: BaseQuantizeConfig | dict | None = None, name: str | None = None
) -> QuantizedWeight:
    """Round-to-nearest on the same grid as GPTQ (groups in original order; desc_act is ignored)."""
    cfg = as_config(config)
    result = _C.rtn_quantize(weight, cfg.to_native(), name or "")
    return _wrap(result, name or "")
