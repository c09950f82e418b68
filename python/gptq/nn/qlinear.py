"""QuantLinear: a linear layer whose weight is stored GPTQ-packed.

Buffers are named as in the Hugging Face GPTQ checkpoint format, so a state dict loads straight in:
  qweight int32 [K*bits/32, N], qzeros int32 [G, N*bits/32], scales [G, N], g_idx int32 [K],
  bias [N] (when the original layer had one), with K = in_features, N = out_features and
  G = ceil(K / group_size) (1 for group_size -1).
After loading, `post_init()` chooses the kernel backend (see backends.py) and lets it repack once.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..format import CHECKPOINT_FORMATS, _format_id
from . import backends as _backends


class QuantLinear(nn.Module):
    QUANT_TYPE = "gptq"

    def __init__(
        self,
        bits: int,
        group_size: int,
        infeatures: int,
        outfeatures: int,
        bias: bool,
        desc_act: bool = False,
        sym: bool = True,
        checkpoint_format: str = "gptq",
        dtype: torch.dtype = torch.float16,
        backend: str = "auto",
        device: torch.device | str | None = None,
    ):
        super().__init__()
        if bits not in (2, 3, 4, 8):
            raise ValueError(f"QuantLinear: bits must be one of [2, 3, 4, 8], got {bits}")
        if group_size != -1 and group_size <= 0:
            raise ValueError(f"QuantLinear: group_size must be -1 or positive, got {group_size}")
        if checkpoint_format not in CHECKPOINT_FORMATS:
            raise ValueError(f"QuantLinear: checkpoint_format must be one of {sorted(CHECKPOINT_FORMATS)}, got {checkpoint_format!r}")
        period = 32 if bits == 3 else 32 // bits
        if infeatures % 32 != 0:
            raise ValueError(f"QuantLinear: in_features must be a multiple of 32 for the GPTQ packing, got {infeatures}")
        if outfeatures % period != 0:
            raise ValueError(f"QuantLinear: out_features must be a multiple of {period} for {bits}-bit zeros, got {outfeatures}")
        self.bits, self.group_size = bits, group_size
        self.in_features, self.out_features = infeatures, outfeatures
        self.desc_act, self.sym, self.checkpoint_format = desc_act, sym, checkpoint_format
        self.requested_backend = backend
        groups = 1 if group_size == -1 else math.ceil(infeatures / group_size)
        kw = {"device": device}
        self.register_buffer("qweight", torch.zeros(infeatures * bits // 32, outfeatures, dtype=torch.int32, **kw))
        self.register_buffer("qzeros", torch.zeros(groups, outfeatures * bits // 32, dtype=torch.int32, **kw))
        self.register_buffer("scales", torch.zeros(groups, outfeatures, dtype=dtype, **kw))
        g = torch.arange(infeatures, dtype=torch.int32, device=device)
        self.register_buffer("g_idx", g // group_size if group_size != -1 else torch.zeros_like(g))
        self.register_buffer("bias", torch.zeros(outfeatures, dtype=dtype, **kw) if bias else None)
        self.backend: _backends.Backend | None = None

    # AutoGPTQ's attribute names, which PEFT and older code read.
    @property
    def infeatures(self) -> int:
        return self.in_features

    @property
    def outfeatures(self) -> int:
        return self.out_features

    @property
    def weight(self) -> torch.Tensor:  # PEFT reads device and dtype from here
        return self.qweight

    def describe(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, bits={self.bits}, group_size={self.group_size}, "
                f"desc_act={self.desc_act}, format={self.checkpoint_format}")

    def extra_repr(self) -> str:
        b = self.backend.name if self.backend else f"{self.requested_backend} (not chosen yet)"
        return f"{self.describe()}, bias={self.bias is not None}, backend={b}"

    @classmethod
    def from_tensors(cls, qweight, qzeros, scales, g_idx=None, bias=None, *, bits: int, group_size: int,
                     checkpoint_format: str = "gptq", sym: bool = True, desc_act: bool | None = None,
                     backend: str = "auto") -> "QuantLinear":
        """A layer holding the given checkpoint tensors (e.g. a QuantizedWeight's)."""
        K, N = qweight.shape[0] * 32 // bits, qweight.shape[1]
        if desc_act is None:
            desc_act = g_idx is not None and group_size != -1 and not torch.equal(
                g_idx.cpu(), torch.arange(K, dtype=torch.int32) // group_size)
        layer = cls(bits, group_size, K, N, bias is not None, desc_act=desc_act, sym=sym,
                    checkpoint_format=checkpoint_format, dtype=scales.dtype, backend=backend, device=qweight.device)
        with torch.no_grad():
            layer.qweight.copy_(qweight)
            layer.qzeros.copy_(qzeros)
            layer.scales.copy_(scales)
            if g_idx is not None:
                layer.g_idx.copy_(g_idx)
            if bias is not None:
                layer.bias.copy_(bias)
        return layer

    def dequantize_weight(self) -> torch.Tensor:
        """The float weight [out_features, in_features] in the scales' dtype."""
        return torch.ops.gptq.dequantize(self.qweight, self.qzeros, self.scales, self.g_idx, self.bits,
                                         self.group_size, _format_id(self.checkpoint_format))

    def post_init(self, backend: str | None = None, trainable: bool = False) -> None:
        """Chooses the kernel backend for the layer's current device and lets it repack."""
        requested = self.requested_backend if backend is None else backend
        chosen = _backends.select_backend(self, requested, self.qweight.device, trainable)
        chosen.prepare(self)
        self.requested_backend, self.backend = requested, chosen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend is None:
            self.post_init()
        if x.shape[-1] != self.in_features:
            raise ValueError(f"QuantLinear({self.describe()}): input has {x.shape[-1]} features, expected {self.in_features}")
        out_shape = (*x.shape[:-1], self.out_features)
        y = self.backend.forward(self, x.reshape(-1, self.in_features))
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(out_shape).to(x.dtype)
