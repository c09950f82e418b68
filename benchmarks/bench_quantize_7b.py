"""GPTQ of a Llama-2-7B-shaped model end to end: wall time by phase, peak GPU and host memory.

The model is Llama-2-7B's architecture (32 layers, hidden 4096, MLP 11008, 32 heads, vocabulary
32000) with random fp16 weights (normal, std 0.02; built from the config, nothing downloaded), and the
calibration set is 128 sequences of 2048 random token ids (seeded). Random data gives the true cost
of every phase (the work does not depend on the values), not a quality figure.

Phases: capture (embeddings to the first layer's inputs), calibration forward (every layer run on
every batch, once per true-sequential group and once more for the outputs, with the Hessian hooks),
solver (GPTQ per linear), packing (building QuantLinear modules), saving (safetensors to local disk).
Targets: under 5 minutes end to end, peak GPU memory under 16 GB, peak host memory under 1.3x the
float model's size.

  python benchmarks/bench_quantize_7b.py --out PATH [--layers N] [--nsamples 128] [--seqlen 2048]
writes PATH.json and prints a summary. --layers N < 32 measures the first N layers only (say so).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time

import torch


def rss_gb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


class RssSampler:
    """Peak resident set size, sampled every 50 ms (ru_maxrss misses nothing but includes startup)."""

    def __init__(self):
        self.peak = 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_gb())
            time.sleep(0.05)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *a):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_gb())


def build_model(layers: int, device: str, hidden: int = 4096, intermediate: int = 11008):
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                         num_attention_heads=hidden // 128, num_key_value_heads=hidden // 128, vocab_size=32000,
                         max_position_embeddings=4096, tie_word_embeddings=False)
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float16)
    g = torch.Generator(device=device).manual_seed(0)
    for name, p in list(model.named_parameters()):
        # random values are drawn on the GPU (fast) and land in host memory, as a loaded checkpoint would
        if p.dim() == 1:
            t = torch.ones(p.shape, dtype=torch.float16)
        else:
            t = (torch.randn(p.shape, generator=g, device=device, dtype=torch.float16) * 0.02).cpu()
        mod_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(mod_name), attr, torch.nn.Parameter(t, requires_grad=False))
    return model.eval()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="results are written to OUT.json")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--desc-act", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="a small model on the CPU, to check the script runs")
    args = ap.parse_args()
    if not torch.cuda.is_available() and not args.smoke:
        print("bench_quantize_7b: needs a CUDA GPU; skipped")
        return 0
    hidden, inter = (256, 512) if args.smoke else (4096, 11008)

    import transformers

    import gptq
    from gptq import AutoGPTQForCausalLM, BaseQuantizeConfig

    dev = torch.device("cpu" if args.smoke else "cuda:0")
    cuda = dev.type == "cuda"
    t_all = time.perf_counter()
    with RssSampler() as rss:
        t = time.perf_counter()
        model = build_model(args.layers, dev.type, hidden, inter)
        t_build = time.perf_counter() - t
        float_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        rss_after_build = rss_gb()
        g = torch.Generator().manual_seed(1)
        examples = [{"input_ids": torch.randint(0, 32000, (args.seqlen,), generator=g),
                     "attention_mask": torch.ones(args.seqlen, dtype=torch.long)} for _ in range(args.nsamples)]
        qc = BaseQuantizeConfig(bits=args.bits, group_size=args.group_size, desc_act=args.desc_act)
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        t = time.perf_counter()
        wrapped = AutoGPTQForCausalLM.from_pretrained(model, qc)
        wrapped.quantize(examples, batch_size=args.batch_size, device=dev, progress=True)
        if cuda:
            torch.cuda.synchronize(dev)
        t_quant = time.perf_counter() - t
        s = wrapped.quant_stats
        folder = tempfile.mkdtemp(prefix="bench7b-")
        t = time.perf_counter()
        wrapped.save_quantized(os.path.join(folder, "ckpt"))
        t_save = time.perf_counter() - t
        ckpt_bytes = sum(os.path.getsize(os.path.join(folder, "ckpt", f)) for f in os.listdir(os.path.join(folder, "ckpt")))
        shutil.rmtree(folder, ignore_errors=True)
    peak_gpu = torch.cuda.max_memory_allocated(dev) / 2**30 if cuda else 0.0
    peak_gpu_reserved = torch.cuda.max_memory_reserved(dev) / 2**30 if cuda else 0.0
    total = t_quant + t_save
    other = t_quant - (s.seconds_capture + s.seconds_forward + s.seconds_solve + s.seconds_pack)
    res = {
        "benchmark": "bench_quantize_7b",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": torch.cuda.get_device_name(dev) if cuda else "cpu (smoke run)",
        "versions": {"gptq": gptq.__version__, "torch": torch.__version__, "cuda": torch.version.cuda,
                     "transformers": transformers.__version__, "python": sys.version.split()[0]},
        "model": (f"Llama-2-7B shape, {args.layers} of 32 layers, random fp16 weights (std 0.02)" if not args.smoke
                  else f"smoke: hidden {hidden}, MLP {inter}, {args.layers} layers"),
        "calibration": f"{args.nsamples} x {args.seqlen} random token ids, batch size {args.batch_size}, "
                       f"activations cached on the GPU",
        "config": {"bits": args.bits, "group_size": args.group_size, "desc_act": args.desc_act, "sym": True,
                   "true_sequential": True},
        "seconds": {"build_model (not counted)": round(t_build, 1), "capture": round(s.seconds_capture, 1),
                    "calibration_forward": round(s.seconds_forward, 1), "solver": round(s.seconds_solve, 1),
                    "packing": round(s.seconds_pack, 1), "other": round(other, 1), "save": round(t_save, 1),
                    "end_to_end (quantize + save)": round(total, 1)},
        "linears": len(s.records),
        "memory_gb": {"float_model": round(float_bytes / 2**30, 2), "peak_gpu_allocated": round(peak_gpu, 2),
                      "peak_gpu_reserved": round(peak_gpu_reserved, 2), "peak_host_rss": round(rss.peak, 2),
                      "host_rss_after_build": round(rss_after_build, 2),
                      "peak_host_over_float_model": round(rss.peak / (float_bytes / 2**30), 3),
                      "checkpoint_on_disk": round(ckpt_bytes / 2**30, 2)},
        "targets": {"end_to_end_under_300_s": total < 300, "peak_gpu_under_16_gb": peak_gpu_reserved < 16,
                    "peak_host_under_1.3x_float": rss.peak < 1.3 * float_bytes / 2**30},
        "wall_s_including_build": round(time.perf_counter() - t_all, 1),
    }
    if args.layers < 32:
        res["note"] = (f"measured {args.layers} of 32 layers; per-layer phases scale linearly, so 32 layers "
                       f"would take about {(s.seconds_forward + s.seconds_solve + s.seconds_pack) * 32 / args.layers + s.seconds_capture:.0f} s "
                       f"before saving")
    print(json.dumps(res, indent=2))
    with open(args.out + ".json", "w") as f:
        json.dump(res, f, indent=2)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
