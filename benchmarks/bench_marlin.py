"""Benchmark of gptq.marlin_gemm (4-bit, group 128, fp16) against torch fp16 matmul (cuBLAS).

Each timing replays a CUDA graph of R calls (so launch overhead from Python is not measured, as in a
decoding loop captured in a graph) that rotate over several weight copies totalling > 100 MB, so
the weights come from HBM and not from the 50 MB L2; median of several replays. Random words in the
repacked layout stand for a repacked checkpoint (the repack is a bijection on codes; the tests check
it). Prints per shape and M: time, bytes moved / time (TB/s) and its share of 3.0 TB/s (the H100's
measured copy bandwidth is 3.03 TB/s), TFLOP/s, and fp16 time / marlin time.

    python benchmarks/bench_marlin.py --out benchmarks/results/marlin_h100   # writes .json too
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform

import torch

import gptq
from _timing import copies_for, graph_median  # benchmarks/_timing.py
from gptq.kernels import marlin

PEAK_BW = 3.0e12
ROTATE_BYTES = 100e6
SHAPES = [(4096, 4096), (4096, 11008), (11008, 4096), (8192, 8192), (8192, 28672), (28672, 8192)]
MS = [1, 16, 64, 256, 1024, 4096]


def make_weights(K, N, bits, group_size, dtype, *, asym=False, act_order=False):
    K_pad, N_pad = -(-K // 128) * 128, -(-N // 64) * 64
    rows = K_pad if group_size == -1 else group_size
    G = -(-K_pad // rows)
    qw = torch.randint(-(2**31), 2**31, (N_pad // 64, K_pad * 2 * bits), dtype=torch.int32, device="cuda")
    sc = (torch.rand(G, N_pad, device="cuda") * 0.01 + 0.001).to(dtype)
    zp = torch.randint(0, 2**bits, (G, N_pad), device="cuda").to(dtype) if asym else None
    perm = torch.randperm(K, device="cuda", dtype=torch.int32) if act_order else None
    return marlin.MarlinWeights(qw, sc, zp, perm, bits, group_size, K, N)


def weight_bytes(w: marlin.MarlinWeights) -> int:
    b = w.qweight.numel() * 4 + w.scales.numel() * w.scales.element_size()
    return b + (w.zeros.numel() * w.zeros.element_size() if w.zeros is not None else 0)


def bench_shape(K, N, m, *, bits=4, group_size=128, dtype=torch.float16, asym=False, act_order=False,
                mode="auto", fp16=True):
    w0 = make_weights(K, N, bits, group_size, dtype, asym=asym, act_order=act_order)
    n = copies_for(weight_bytes(w0), ROTATE_BYTES)
    ws = [w0] + [make_weights(K, N, bits, group_size, dtype, asym=asym, act_order=act_order) for _ in range(n - 1)]
    x = torch.randn(m, K, dtype=dtype, device="cuda")
    calls = max(n, 8 if m <= 256 else 2)
    t = graph_median([lambda w=ws[i % n]: marlin.gemm(x, w, mode) for i in range(calls)], reps=7)
    qbytes = weight_bytes(w0) + x.numel() * 2 + m * N * 2
    row = dict(K=K, N=N, m=m, bits=bits, group_size=group_size, dtype=str(dtype).split(".")[-1], asym=asym,
               act_order=act_order, mode=mode, us=t * 1e6, TBps=qbytes / t / 1e12, pct_bw=100 * qbytes / t / PEAK_BW,
               TFLOPs=2 * m * K * N / t / 1e12)
    del ws
    if fp16:
        Wb = K * N * 2
        nf = copies_for(Wb, ROTATE_BYTES)
        Ws = [torch.randn(N, K, dtype=dtype, device="cuda") for _ in range(nf)]
        callsf = max(nf, 8 if m <= 256 else 2)
        tf = graph_median([lambda W=Ws[i % nf]: torch.nn.functional.linear(x, W) for i in range(callsf)], reps=7)
        row.update(fp16_us=tf * 1e6, speedup=tf / t)
        del Ws
    torch.cuda.empty_cache()
    return row


def fmt(r):
    s = (f"{r['K']:>6}x{r['N']:<6} m={r['m']:<5} {r['bits']}b g{r['group_size']:<4} {r['dtype']:<8}"
         f"{' asym' if r['asym'] else '     '}{' actord' if r['act_order'] else '       '} {r['mode']:<5} "
         f"{r['us']:9.1f} us {r['TBps']:5.2f} TB/s {r['pct_bw']:5.1f}% {r['TFLOPs']:7.1f} TFLOP/s")
    if "fp16_us" in r:
        s += f" | fp16 {r['fp16_us']:8.1f} us  x{r['speedup']:.2f}"
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="path prefix; writes PATH.json")
    ap.add_argument("--quick", action="store_true", help="main table only")
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    meta = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, cuda=torch.version.cuda,
                gptq=gptq.__version__, python=platform.python_version(),
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                method="CUDA graph of R calls rotating > 100 MB of weight copies, median of 7 replays",
                peak_bw_TBps=PEAK_BW / 1e12)

    def save():  # after every row, so that a run cut short keeps what it measured
        with open(args.out + ".json", "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=1)

    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  gptq {gptq.__version__}")
    print("main table: 4-bit symmetric, group 128, fp16 activations, mode auto")
    for K, N in SHAPES:
        for m in MS:
            r = bench_shape(K, N, m)
            rows.append(r)
            save()
            print(fmt(r), flush=True)
    print("paths at medium/large M (fused kernel vs dequantize + cuBLAS):")
    for K, N in [(8192, 28672), (4096, 4096)]:
        for m in (32, 64, 128, 256):
            for mode in ("fused", "dense"):
                r = bench_shape(K, N, m, mode=mode, fp16=False)
                rows.append(r)
                save()
                print(fmt(r), flush=True)
    if not args.quick:
        print("variants at 8192x8192:")
        for m in (1, 16):
            for kw in (dict(asym=True), dict(act_order=True), dict(group_size=32), dict(group_size=-1), dict(bits=8),
                       dict(dtype=torch.bfloat16), dict(bits=8, dtype=torch.bfloat16, asym=True)):
                r = bench_shape(8192, 8192, m, fp16=False, **kw)
                rows.append(r)
                save()
                print(fmt(r), flush=True)
    save()
    print(f"wrote {args.out}.json")


if __name__ == "__main__":
    main()
