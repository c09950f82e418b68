"""Benchmark of gptq::dequantize on the GPU (the large-m path: dequantize, then an fp16 GEMM).

Dequantization is memory-bound: it reads K*N*bits/8 bytes of codes (plus scales) and writes K*N*2
bytes of fp16. The ceiling is the device-to-device copy bandwidth measured in the same run. For
context it also times the fp16 GEMM at m = 1024 on the same weight (what dequantize adds to it).

    python benchmarks/bench_dequant.py --out PATH   # writes PATH.json and prints a table
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform

import torch

import gptq


def bench(fn, reps=50):
    """Median time in seconds over `reps` runs, after warm-up, timed with CUDA events."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    dev = torch.device("cuda")
    src = torch.empty(1 << 30, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    copy_bw = 2 * src.numel() / bench(lambda: dst.copy_(src), reps=20)  # bytes read + written per second
    del src, dst
    rows = []
    print(f"device {torch.cuda.get_device_name()}  torch {torch.__version__}  copy bandwidth {copy_bw / 1e12:.2f} TB/s")
    print(f"{'k x n':>12} {'bits':>4} {'act':>4} {'time us':>9} {'TB/s':>6} {'% copy':>7} {'gemm m=1024 us':>15}")
    for (K, N) in [(4096, 4096), (4096, 11008), (8192, 28672), (28672, 8192)]:
        for bits, act in [(4, False), (3, False), (4, True)]:
            g = 128
            G = K // g
            qweight = torch.randint(-(2**31), 2**31 - 1, (K * bits // 32, N), dtype=torch.int32, device=dev)
            qzeros = torch.randint(-(2**31), 2**31 - 1, (G, N * bits // 32), dtype=torch.int32, device=dev)
            scales = torch.rand(G, N, device=dev).half()
            g_idx = torch.arange(K, device=dev, dtype=torch.int32) // g
            if act:
                g_idx = g_idx[torch.randperm(K, device=dev)]
            t = bench(lambda: gptq.dequantize(qweight, qzeros, scales, g_idx, bits, g))
            moved = K * N * bits / 8 + G * N * (2 + bits / 8) + K * 4 + K * N * 2
            W = gptq.dequantize(qweight, qzeros, scales, g_idx, bits, g)
            x = torch.randn(1024, K, device=dev).half()
            t_gemm = bench(lambda: x @ W.t())
            r = dict(k=K, n=N, bits=bits, group_size=g, act_order=act, us=t * 1e6, tbps=moved / t / 1e12,
                     pct_copy=100 * moved / t / copy_bw, gemm_m1024_us=t_gemm * 1e6)
            rows.append(r)
            print(f"{K:>5}x{N:<6} {bits:>4} {'yes' if act else 'no':>4} {r['us']:9.1f} {r['tbps']:6.2f} "
                  f"{r['pct_copy']:6.1f}% {r['gemm_m1024_us']:15.1f}")
    meta = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, gptq=gptq.__version__,
                python=platform.python_version(), date=datetime.datetime.now(datetime.timezone.utc).isoformat(),
                copy_tbps=copy_bw / 1e12, rows=rows)
    with open(args.out + ".json", "w") as f:
        json.dump(meta, f, indent=2)


if __name__ == "__main__":
    main()
