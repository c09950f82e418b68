"""Runs one quantized GEMM op a few times on each shape and batch size, for a profiler (Nsight Compute)
to pick up, e.g.

    ncu --kernel-name regex:exllamav2 --launch-skip 3 --launch-count 1 \
        python benchmarks/lab/profile_gemm.py --op exllamav2 --shapes 8192x28672 --ms 16

4-bit (or --bits) group 128, random codes, fp16 activations; --calls launches in a row per shape and
m, shapes in the order given, then m in the order given.
"""

from __future__ import annotations

import argparse

import torch

import gptq  # noqa: F401  (registers torch.ops.gptq)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--op", choices=["exllamav2", "autogptq"], default="exllamav2")
    ap.add_argument("--shapes", default="8192x28672", help="comma-separated KxN shapes")
    ap.add_argument("--ms", default="16", help="comma-separated batch sizes m")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--calls", type=int, default=6)
    a = ap.parse_args()
    op = torch.ops.gptq.exllamav2_gemm if a.op == "exllamav2" else torch.ops.gptq.autogptq_gemm
    for shape in a.shapes.split(","):
        K, N = (int(v) for v in shape.lower().split("x"))
        G = K // a.group_size
        qweight = torch.randint(-2**31, 2**31 - 1, (K * a.bits // 32, N), dtype=torch.int32, device="cuda")
        qzeros = torch.randint(-2**31, 2**31 - 1, (G, N * a.bits // 32), dtype=torch.int32, device="cuda")
        scales = (torch.rand(G, N, device="cuda") * 0.01).half()
        for m in (int(v) for v in a.ms.split(",")):
            x = torch.randn(m, K, device="cuda").half()
            for _ in range(a.calls):  # both ops take (x, qweight, qzeros, scales, g_idx or perm, bits, group, format)
                op(x, qweight, qzeros, scales, None, a.bits, a.group_size, 2)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
