"""Runs one quantized GEMM op a few times on one shape, for a profiler (Nsight Compute) to pick up.

    ncu --kernel-name regex:exllamav2 --launch-skip 3 --launch-count 1 \
        python benchmarks/lab/profile_gemm.py --op exllamav2 --k 8192 --n 28672 --m 16

4-bit (or --bits) group 128, random codes, fp16 activations; --calls launches in a row.
"""

from __future__ import annotations

import argparse

import torch

import gptq  # noqa: F401  (registers torch.ops.gptq)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--op", choices=["exllamav2", "autogptq"], default="exllamav2")
    ap.add_argument("--k", type=int, default=8192)
    ap.add_argument("--n", type=int, default=28672)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--calls", type=int, default=6)
    a = ap.parse_args()
    K, N, G = a.k, a.n, a.k // a.group_size
    qweight = torch.randint(-2**31, 2**31 - 1, (K * a.bits // 32, N), dtype=torch.int32, device="cuda")
    qzeros = torch.randint(-2**31, 2**31 - 1, (G, N * a.bits // 32), dtype=torch.int32, device="cuda")
    scales = (torch.rand(G, N, device="cuda") * 0.01).half()
    x = torch.randn(a.m, K, device="cuda").half()
    op = torch.ops.gptq.exllamav2_gemm if a.op == "exllamav2" else torch.ops.gptq.autogptq_gemm
    for _ in range(a.calls):  # both ops take (x, qweight, qzeros, scales, g_idx or perm, bits, group, format)
        op(x, qweight, qzeros, scales, None, a.bits, a.group_size, 2)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
