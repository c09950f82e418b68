"""Independent references for the tests: plain numpy, written from the format description, sharing
no code with gptq."""

from __future__ import annotations

import numpy as np
import torch


def ref_pack_rows(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Bit-by-bit packing along dim 0: value r of a column occupies stream bits [bits*r, bits*r+bits);
    stream bit b is bit b % 32 of word b // 32."""
    c = codes.to(torch.int64).numpy()
    R, C = c.shape
    words = np.zeros((R * bits // 32, C), dtype=np.uint64)
    for r in range(R):
        for b in range(bits):
            bit = (c[r] >> b) & 1
            sb = r * bits + b
            words[sb // 32] |= bit.astype(np.uint64) << np.uint64(sb % 32)
    return torch.from_numpy(words.astype(np.uint32).view(np.int32).copy())


def ref_pack_cols(codes: torch.Tensor, bits: int) -> torch.Tensor:
    return ref_pack_rows(codes.t().contiguous(), bits).t().contiguous()


def ref_dequantize(q, z, scales, g_idx) -> torch.Tensor:
    """float64 W [N, K] = s[g, n] * (q[k, n] - z[g, n]) with g = g_idx[k], from unpacked integers."""
    g = g_idx.long()
    return (scales.double()[g] * (q.double() - z.double()[g])).t().contiguous()
