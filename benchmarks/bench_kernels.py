"""Speed of the quantized GEMM kernels against torch's fp16 matmul (cuBLAS), on the current GPU.

    python benchmarks/bench_kernels.py --out PATH [--quick]

For every shape (k x n) and batch m: time per call (median), effective TB/s (bytes of weights,
scales, zeros, x and y over the time), % of the copy bandwidth measured in the same run, TFLOP/s
(2 m k n over the time) and the speedup over fp16. Method:
  - weights are rotated among enough copies that together they exceed 2x the L2 (256 MB or more),
    so every call streams its weight from HBM, as a model's layers do;
  - each measurement is a CUDA graph of R consecutive calls (cycling through the copies), replayed
    N times and timed with CUDA events; the median over the replays, divided by R, is reported.
    Graphs remove the CPU launch overhead that decoding with torch.compile / CUDA graphs also removes;
    fp16 and our kernels are timed the same way in the same run. On compute capability 9.0 our kernels
    are launched as dependent launches (csrc/common/pdl.cuh): a call prefetches its weights into L2
    while the call before it finishes, as it would behind the previous layer in a model; GPTQ_PDL=0
    turns that off.
Writes PATH.json (device, versions, date, every figure) and prints a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics

import torch

import gptq
from _timing import copies_for, graph_median  # benchmarks/_timing.py

L2_BYTES = 50 * 2**20
ROTATE_BYTES = 256 * 2**20


def copy_bandwidth():
    """Device-to-device copy of a 4 GiB buffer: bytes read + written over the median time."""
    n = 1 << 30
    a = torch.empty(n, dtype=torch.float32, device="cuda").uniform_()
    b = torch.empty_like(a)
    times = []
    for _ in range(30):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        b.copy_(a)
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1) * 1e-3)
    t = statistics.median(times[5:])
    del a, b
    torch.cuda.empty_cache()
    return 2 * n * 4 / t


def random_packed(bits, K, N, group_size, dtype, gen):
    """A layer of uniformly random codes: packed words of uniformly random bits are exactly that, so
    no packing pass is needed."""
    G = 1 if group_size == -1 else -(-K // group_size)
    words = lambda r, c: torch.randint(-2**31, 2**31 - 1, (r, c), dtype=torch.int32, device="cuda", generator=gen)
    return dict(
        qweight=words(K * bits // 32, N),
        qzeros=words(G, N * bits // 32),
        scales=(torch.rand(G, N, device="cuda", generator=gen) * 0.02 + 1e-3).to(dtype),
        g_idx=(torch.arange(K, dtype=torch.int32, device="cuda") // group_size),
    )


def layer_bytes(L):
    return sum(L[k].numel() * L[k].element_size() for k in ("qweight", "qzeros", "scales"))


def bench_shape(K, N, m, kernels, results, bw, base_rows):
    dtype = torch.float16
    gen = torch.Generator(device="cuda").manual_seed(K * 7 + N)
    x = torch.randn(m, K, device="cuda", dtype=dtype)
    io_bytes = (m * K + m * N) * 2
    flops = 2.0 * m * K * N
    # fp16 baseline
    w = torch.randn(N, K, device="cuda", dtype=dtype) * 0.02
    ncp = copies_for(w.numel() * 2, ROTATE_BYTES)
    ws = [w] + [w.clone() for _ in range(ncp - 1)]
    t16 = graph_median([lambda w=w: torch.matmul(x, w.t()) for w in ws], reps=20)
    del ws, w
    rows = [("fp16 (cuBLAS)", 16, t16, K * N * 2 + io_bytes)]
    for name, bits, fn_factory in kernels:
        L = random_packed(bits, K, N, 128, dtype, gen)
        nb = layer_bytes(L)
        ncp = copies_for(nb, ROTATE_BYTES)
        Ls = [L] + [{k: v.clone() for k, v in L.items()} for _ in range(ncp - 1)]
        fns = [fn_factory(Li, x, bits) for Li in Ls]
        t = graph_median(fns, reps=20)
        rows.append((name, bits, t, nb + io_bytes))
        del Ls, fns, L
        torch.cuda.empty_cache()
    for name, bits, t, nbytes in rows:
        r = dict(kernel=name, bits=bits, group_size=128 if bits < 16 else None, k=K, n=N, m=m, time_us=t * 1e6,
                 tb_per_s=nbytes / t / 1e12, pct_copy_bw=100 * nbytes / t / bw, tflop_per_s=flops / t / 1e12,
                 speedup_vs_fp16=t16 / t)
        results.append(r)
        base_rows.append(r)
    torch.cuda.empty_cache()


def autogptq_factory(L, x, bits):
    return lambda: torch.ops.gptq.autogptq_gemm(x, L["qweight"], L["qzeros"], L["scales"], None, bits, 128, 2)


def exllamav2_factory(L, x, bits):
    return lambda: torch.ops.gptq.exllamav2_gemm(x, L["qweight"], L["qzeros"], L["scales"], None, bits, 128, 2)


def exllamav2_bf16_factory(L, x, bits):
    # bf16 activations and scales (one converted copy per rotated layer), timed against the fp16 baseline.
    xb, sb = x.bfloat16(), L["scales"].bfloat16()
    return lambda: torch.ops.gptq.exllamav2_gemm(xb, L["qweight"], L["qzeros"], sb, None, bits, 128, 2)


def autogptq_bf16_factory(L, x, bits):
    # The AutoGPTQ-style kernel on bf16, the one bf16 path besides the Hopper GEMM.
    xb, sb = x.bfloat16(), L["scales"].bfloat16()
    return lambda: torch.ops.gptq.autogptq_gemm(xb, L["qweight"], L["qzeros"], sb, None, bits, 128, 2)


_SORTED = {}


def _sorted_copy(L, x, bits):
    """An act-order layer's rows sorted at load (exllamav2_prepare) and its perm. The rotated copies hold
    the same data, so the (CPU-side) sort is done once per shape and its result cloned."""
    K, N = x.shape[1], L["qweight"].shape[1]
    key = (K, N, bits)
    if key not in _SORTED:
        g = L["g_idx"][torch.randperm(K, device="cuda")]
        _SORTED.clear()
        _SORTED[key] = torch.ops.gptq.exllamav2_prepare(L["qweight"], g, bits, 128)
    qs, perm = _SORTED[key]
    return qs.clone(), perm


def exllamav2_act_order_factory(L, x, bits):
    # An act-order layer as the exllamav2 backend runs it: sorted rows, x gathered per call (by the
    # Hopper GEMM's x staging, else by a gather kernel in front of the kernel).
    qs, perm = _sorted_copy(L, x, bits)
    return lambda: torch.ops.gptq.exllamav2_gemm(x, qs, L["qzeros"], L["scales"], perm, bits, 128, 2)


def exllamav2_act_order_index_select_factory(L, x, bits):
    # The act-order path before the gather kernel (for A/B runs only): torch's index_select, then the
    # kernel on the gathered x.
    qs, perm = _sorted_copy(L, x, bits)
    return lambda: torch.ops.gptq.exllamav2_gemm(x.index_select(1, perm), qs, L["qzeros"], L["scales"], None, bits,
                                                 128, 2)


# Kernels timed only when --kernels names them (A/B runs against earlier designs).
EXTRA = {"exllamav2 act-order index_select": exllamav2_act_order_index_select_factory}


def cutlass_factory(L, x, bits):
    # The "cutlass" backend: the copy in CUTLASS's layout is made once, as at load (outside the timing);
    # calls from GPTQ_CUTLASS_COPY_MIN_M rows run CUTLASS's GEMM on it, smaller ones exllamav2's kernels.
    w, z = torch.ops.gptq.cutlass_prepare(L["qweight"], L["qzeros"], L["scales"], bits, 128, 2)
    return lambda: torch.ops.gptq.cutlass_gemm(x, L["qweight"], L["qzeros"], L["scales"], None, w, z, bits, 128, 2)


def cutlass_available():
    # The op has a CUDA kernel only in builds with CUTLASS's GEMM; that GEMM runs on compute capability 9.0.
    from gptq.nn.backends import _has_kernel

    return _has_kernel("cutlass_gemm") and torch.cuda.get_device_capability() == (9, 0)


def autogptq_act_order_factory(L, x, bits):
    K = x.shape[1]
    g = L["g_idx"][torch.randperm(K, device="cuda")].contiguous()
    return lambda: torch.ops.gptq.autogptq_gemm(x, L["qweight"], L["qzeros"], L["scales"], g, bits, 128, 2)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output path prefix (writes PATH.json)")
    ap.add_argument("--quick", action="store_true", help="fewer shapes and batch sizes")
    ap.add_argument("--ms", help="comma-separated batch sizes m (default: 1,4,16,64,256,1024,4096)")
    ap.add_argument("--shapes", help="comma-separated KxN shapes, e.g. 8192x28672,4096x4096")
    ap.add_argument("--kernels", help="comma-separated kernel names to time (default: all but the A/B variants in EXTRA); fp16 always runs")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = True
    bw = copy_bandwidth()
    shapes = [(4096, 4096), (8192, 8192), (4096, 11008), (11008, 4096), (8192, 28672), (28672, 8192)]
    ms = [1, 4, 16, 64, 256, 1024, 4096]
    if args.quick:
        shapes, ms = [(4096, 4096), (8192, 8192), (8192, 28672), (28672, 8192)], [1, 16, 64, 1024]
    if args.ms:
        ms = [int(v) for v in args.ms.split(",")]
    if args.shapes:
        shapes = [tuple(int(d) for d in v.split("x")) for v in args.shapes.split(",")]
    wanted = set(args.kernels.split(",")) if args.kernels else None
    results, table = [], []
    for K, N in shapes:
        for m in ms:
            if m == 4096 and K * N > 8192 * 8192:
                continue  # long; the m = 1024 row already shows the dequantize + cuBLAS regime
            # exllamav2 (the auto backend) at every m: GEMV, tensor-core GEMM, Hopper GEMM or
            # dequantize + cuBLAS by m; autogptq above m = 16 is dequantize + cuBLAS.
            kernels = [("autogptq", 4, autogptq_factory), ("exllamav2", 4, exllamav2_factory)]
            if m >= 256 and cutlass_available():
                kernels.append(("cutlass", 4, cutlass_factory))
            if (K, N) in ((8192, 28672), (4096, 4096)) and m <= 1024:
                kernels.append(("exllamav2 bf16", 4, exllamav2_bf16_factory))
                kernels.append(("exllamav2 act-order", 4, exllamav2_act_order_factory))
                if m <= 16:
                    kernels.append(("autogptq bf16", 4, autogptq_bf16_factory))
            if m <= 16:
                kernels.append(("autogptq", 3, autogptq_factory))
                kernels.append(("autogptq", 2, autogptq_factory))
                kernels.append(("autogptq", 8, autogptq_factory))
                if (K, N) == (8192, 28672) or (K, N) == (4096, 4096):
                    kernels.append(("autogptq act-order", 4, autogptq_act_order_factory))
            if wanted is not None:
                kernels = [kr for kr in kernels if kr[0] in wanted]
                kernels += [(name, 4, f) for name, f in EXTRA.items() if name in wanted]
            bench_shape(K, N, m, kernels, results, bw, table)
            print(f"# done k={K} n={N} m={m}", flush=True)
    hdr = f"{'kernel':22s} {'bits':>4s} {'k':>6s} {'n':>6s} {'m':>5s} {'us':>9s} {'TB/s':>6s} {'%copy':>6s} {'TFLOP/s':>8s} {'x fp16':>7s}"
    print(hdr)
    for r in table:
        print(f"{r['kernel']:22s} {r['bits']:4d} {r['k']:6d} {r['n']:6d} {r['m']:5d} {r['time_us']:9.1f} "
              f"{r['tb_per_s']:6.2f} {r['pct_copy_bw']:6.1f} {r['tflop_per_s']:8.1f} {r['speedup_vs_fp16']:7.2f}")
    info = dict(
        benchmark="bench_kernels",
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device=torch.cuda.get_device_name(),
        capability=list(torch.cuda.get_device_capability()),
        torch=torch.__version__, cuda=torch.version.cuda, gptq=gptq.__version__,
        gptq_commit=gptq._BUILD_INFO.get("git_commit"), python=platform.python_version(),
        copy_bandwidth_tb_per_s=bw / 1e12,
        method="CUDA graph of R calls over rotated weight copies (>= 256 MB), median of 20 replays / R",
        results=results,
    )
    with open(args.out + ".json", "w") as f:
        json.dump(info, f, indent=1)
    print(f"copy bandwidth {bw / 1e12:.2f} TB/s; device {info['device']}; torch {torch.__version__}; {info['date']}")


if __name__ == "__main__":
    main()
