"""Benchmark of the GPTQ solver: gptq.quantize_weight against the same algorithm in plain PyTorch.

For each layer shape [out, in] the Hessian comes from 128 x 2048 tokens of random correlated data
(low-rank mixing + noise + per-channel scales, generated and accumulated on the device; on the CPU
fewer tokens, see --cpu-tokens). Both solvers get the same W and H and run in float32 with TF32
off; the plain-PyTorch one is the IST-DASLab/AutoGPTQ fasterquant loop (blocks of 128, one small
kernel sequence per column), with group grids taken from the current weights like ours. The
outputs are compared: fraction of differing codes (ties) and relative loss difference.

Also times packing of an 8192 x 28672 layer's codes on the CPU (gptq's [N, K] packer).

    python benchmarks/bench_solver.py --out benchmarks/results/solver_h100
    python benchmarks/bench_solver.py --device cpu --shapes 4096x4096 --out benchmarks/results/solver_cpu
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time

import torch

import gptq

SHAPES = [(4096, 4096), (4096, 11008), (11008, 4096), (8192, 28672)]


# ---- plain PyTorch GPTQ (the reference the speed-up is measured against) ---------------------------
RECIPROCAL_SCALE = False  # --torch-reciprocal-scale


def _grid(x, maxq, sym):
    # amin/amax, not min(1)/max(1): on the CPU the latter (values + indices) costs ~10 ms per call.
    xmin = x.amin(1).clamp(max=0)
    xmax = x.amax(1).clamp(min=0)
    if sym:
        xmax = torch.maximum(xmin.abs(), xmax)
        xmin = torch.where(xmin < 0, -xmax, xmin)
    both = (xmin == 0) & (xmax == 0)
    xmin = torch.where(both, -1.0, xmin)
    xmax = torch.where(both, 1.0, xmax)
    if RECIPROCAL_SCALE:
        # What `tensor / python_number` does on CUDA: PyTorch multiplies by the host-computed
        # reciprocal, which can differ from the division by one ulp (the CPU divides).
        scale = (xmax - xmin) * torch.tensor(1.0 / maxq, dtype=x.dtype)
    else:
        # A 0-dim tensor divisor keeps the division IEEE on every device, as in gptq's solver.
        scale = (xmax - xmin) / torch.tensor(float(maxq), dtype=x.dtype, device=x.device)
    zero = torch.full_like(scale, (maxq + 1) // 2) if sym else torch.round(-xmin / scale)
    return scale, zero


def torch_gptq(W, H, bits=4, group_size=128, sym=True, desc_act=True, damp_percent=0.01, blocksize=128):
    W = W.float().clone()
    H = H.float().clone()
    N, K = W.shape
    maxq = 2**bits - 1
    gs = group_size
    if gs == -1:
        scale, zero = _grid(W, maxq, sym)
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    perm = None
    if desc_act:
        perm = torch.argsort(torch.diag(H), descending=True, stable=True)
        W = W[:, perm]
        H = H[perm][:, perm]
    damp = damp_percent * torch.mean(torch.diag(H))
    H[range(K), range(K)] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    Hinv = torch.linalg.cholesky(H, upper=True)
    Q = torch.zeros(N, K, dtype=torch.uint8, device=W.device)
    losses = torch.zeros(N, device=W.device)
    for i1 in range(0, K, blocksize):
        i2 = min(i1 + blocksize, K)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Losses1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if gs != -1 and (i1 + i) % gs == 0:
                src = W1[:, i:i + gs] if gs <= blocksize else W[:, i1 + i:i1 + i + gs]
                scale, zero = _grid(src, maxq, sym)
            q = torch.clamp(torch.round(w / scale) + zero, 0, maxq)
            dq = scale * (q - zero)
            Q1[:, i] = q
            Losses1[:, i] = (w - dq) ** 2 / d**2
            err1 = (w - dq) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        Q[:, i1:i2] = Q1.to(torch.uint8)
        losses += torch.sum(Losses1, 1) / 2
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    if perm is not None:
        Q = Q[:, torch.argsort(perm)]
    return Q, float(losses.sum())


# ---- data ------------------------------------------------------------------------------------------
def correlated_hessian(K, tokens, device, seed=0, chunk=4096):
    """H = 2/n sum x x^T of x = (z A) * c + 0.1 e: rank-64 mixing, per-channel log-normal scales c.

    The running average of gptq.HessianAccumulator, computed here with TF32 allowed: this is data
    generation (262144 x 28672 inputs would take minutes in true fp32), not what is measured.
    """
    g = torch.Generator(device=device).manual_seed(seed)
    A = torch.randn(64, K, generator=g, device=device) / 8
    c = torch.exp(torch.randn(K, generator=g, device=device) * 0.5)
    H = torch.zeros(K, K, device=device)
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        n = 0
        while n < tokens:
            m = min(chunk, tokens - n)
            x = (torch.randn(m, 64, generator=g, device=device) @ A) * c
            x += 0.1 * torch.randn(m, K, generator=g, device=device)
            H.mul_(n / (n + m)).addmm_(x.T, x, alpha=2.0 / (n + m))
            n += m
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    return H


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, reps):
    fn()  # warm-up (kernels, cuBLAS/cuSOLVER handles)
    times = []
    out = None
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return min(times), out


def bench_pack(reps=3):
    N, K = 8192, 28672
    codes = torch.randint(0, 16, (N, K), dtype=torch.uint8)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        qweight = torch.ops.gptq.pack_codes_nk(codes, 4)
        times.append(time.perf_counter() - t0)
    assert qweight.shape == (K // 8, N)
    # spot check one column against the generic packer
    assert torch.equal(qweight[:, :64], gptq.pack_rows(codes[:64].T.contiguous(), 4))
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="writes OUT.json")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shapes", default=",".join(f"{o}x{i}" for o, i in SHAPES))
    ap.add_argument("--tokens", type=int, default=128 * 2048)
    ap.add_argument("--cpu-tokens", type=int, default=16384, help="tokens for the Hessian on the CPU")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--desc-act", type=int, default=1)
    ap.add_argument("--torch-reciprocal-scale", action="store_true",
                    help="reference computes scale = range * (1/maxq) (CUDA PyTorch's `range / maxq`)")
    args = ap.parse_args()
    global RECIPROCAL_SCALE
    RECIPROCAL_SCALE = args.torch_reciprocal_scale
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    tokens = args.tokens if device.type == "cuda" else args.cpu_tokens
    cfg = gptq.BaseQuantizeConfig(bits=args.bits, group_size=args.group_size, desc_act=bool(args.desc_act), sym=True)
    rows = []
    for out_f, in_f in shapes:
        H = correlated_hessian(in_f, tokens, device)
        W = torch.randn(out_f, in_f, generator=torch.Generator(device=device).manual_seed(1), device=device) * 0.02
        ours_t, ours = timed(lambda: gptq._C.gptq_quantize(W, H, cfg.to_native(), "bench"), device, args.reps)
        row = dict(out_features=out_f, in_features=in_f, tokens=tokens, gptq_seconds=ours_t, gptq_loss=ours.loss,
                   damp_percent_used=ours.damp_percent)
        if not args.skip_reference:
            ref_t, (ref_codes, ref_loss) = timed(
                lambda: torch_gptq(W, H, cfg.bits, cfg.group_size, cfg.sym, cfg.desc_act), device, args.reps
            )
            mismatch = float((ours.codes != ref_codes).float().mean())
            rel_loss = abs(ours.loss - ref_loss) / ref_loss
            row.update(torch_seconds=ref_t, torch_loss=ref_loss, speedup=ref_t / ours_t, code_mismatch=mismatch,
                       loss_rel_diff=rel_loss, equal_output=bool(mismatch < 1e-3 and rel_loss < 1e-4))
        rows.append(row)
        print(json.dumps(row), flush=True)
        del H, W, ours
        if device.type == "cuda":
            torch.cuda.empty_cache()
    pack_s = bench_pack()
    info = dict(
        benchmark="bench_solver",
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        cpu_threads=torch.get_num_threads(),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        gptq=gptq.__version__,
        gptq_commit=gptq._BUILD_INFO.get("git_commit"),
        config=dict(bits=cfg.bits, group_size=cfg.group_size, desc_act=cfg.desc_act, sym=cfg.sym,
                    block_size=cfg.block_size, damp_percent=cfg.damp_percent),
        reference_scale="range * (1/maxq)" if RECIPROCAL_SCALE else "range / maxq (IEEE)",
        rows=rows,
        pack_8192x28672_4bit_cpu_seconds=pack_s,
    )
    with open(args.out + ".json", "w") as f:
        json.dump(info, f, indent=2)
    print(f"\nGPTQ solver, {info['device']}, torch {info['torch']}, {info['date']}")
    print(f"config: {info['config']}; Hessian from {tokens} tokens; reference scale {info['reference_scale']}")
    print(f"{'layer [out x in]':>18} {'gptq s':>9} {'torch s':>9} {'speed-up':>9} {'codes differ':>13} {'loss rel diff':>14}")
    for r in rows:
        print(f"{r['out_features']:>8} x {r['in_features']:<7} {r['gptq_seconds']:9.3f} "
              f"{r.get('torch_seconds', float('nan')):9.3f} {r.get('speedup', float('nan')):8.2f}x "
              f"{r.get('code_mismatch', float('nan')):13.2e} {r.get('loss_rel_diff', float('nan')):14.2e}")
    print(f"pack 8192 x 28672 4-bit codes on the CPU ({info['cpu_threads']} threads): {pack_s:.3f} s")


if __name__ == "__main__":
    main()
