"""The ``gptq`` command line (also ``python -m gptq``)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gptq", description="GPTQ quantization and inference.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_env = sub.add_parser("env", help="print versions, CUDA, GPUs and the compiled kernel families")
    p_env.add_argument("--json", action="store_true", help="print the report as JSON")
    sub.add_parser("demo", help="run the embedded default job")
    args = parser.parse_args(argv)

    if args.command == "demo":
        return _demo()

    if args.command == "env":
        import gptq

        if args.json:
            import json

            from gptq.env import collect

            print(json.dumps(collect(), indent=2))
        else:
            gptq.env()
        return 0
    return 2


def _demo() -> int:
    """The embedded default: report the environment, then pack a random GPTQ layer of Llama-2-7B's
    MLP shape (4-bit, group 128, act-order), dequantize it through torch.ops.gptq on every available
    device, and check it against a float64 reference. (The model pipeline replaces this with a real
    quantization of a small trained model.)"""
    import time

    import torch

    import gptq

    gptq.env()
    bits, K, N, g = 4, 11008, 4096, 128
    gen = torch.Generator().manual_seed(0)
    q = torch.randint(0, 2**bits, (K, N), dtype=torch.int32, generator=gen)
    z = torch.randint(0, 2**bits, (K // g, N), dtype=torch.int32, generator=gen)
    s = (torch.rand(K // g, N, generator=gen) * 0.02 + 1e-3).half()
    g_idx = (torch.arange(K, dtype=torch.int32) // g)[torch.randperm(K, generator=gen)]
    t0 = time.perf_counter()
    qweight, qzeros = gptq.pack_rows(q, bits), gptq.pack_cols((z - 1) % 2**bits, bits)
    print(f"\npacked a {N}x{K} {bits}-bit g{g} act-order layer in {time.perf_counter() - t0:.2f} s (CPU)")
    ref = (s.double()[g_idx.long()] * (q.double() - z.double()[g_idx.long()])).t()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    worst = 0.0
    for dev in devices:
        W = gptq.dequantize(qweight.to(dev), qzeros.to(dev), s.to(dev), g_idx.to(dev), bits, g)
        err = float((W.double().cpu() - ref).norm() / ref.norm())
        worst = max(worst, err)
        print(f"dequantize on {dev}: W {tuple(W.shape)} {W.dtype}, relative error vs float64 {err:.1e}")
    return 0 if worst < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
