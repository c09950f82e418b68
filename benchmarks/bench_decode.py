"""End-to-end decoding speed: a Llama-2-7B-shaped model with random weights, fp16 against our 4-bit
GPTQ layers (g128), both with transformers' static KV cache and torch.compile.

    python benchmarks/bench_decode.py --out PATH [--batch 1 16] [--prompt 512] [--new 256]
                                       [--layers 32] [--no-compile] [--device cuda]

For each model and batch size: prefill time (one generate call with one new token) and the decoding
rate, batch * (new - 1) / (time of a full generate - prefill time), median of --reps runs after two
warm-up runs (which also compile). Every decoder projection (q, k, v, o, gate, up, down) becomes a
gptq.nn.QuantLinear with uniformly random codes and zero points; embeddings, norms and lm_head stay
fp16, as in GPTQ checkpoints. Writes PATH.json (device, versions, date, figures) and prints a table.
Random weights make the generated text meaningless, not the timing: every run decodes exactly --new
tokens (no end-of-sequence stop).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time

import torch
from torch import nn

import gptq
from gptq.nn import QuantLinear, post_init_model


def llama_config(layers: int, small: bool):
    from transformers import LlamaConfig

    if small:  # for a quick check of this script on a CPU
        return LlamaConfig(hidden_size=256, intermediate_size=768, num_hidden_layers=layers, num_attention_heads=4,
                           num_key_value_heads=4, vocab_size=1024, max_position_embeddings=1024)
    return LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=layers, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096)


def random_quant_linear(lin: nn.Linear, bits: int, group_size: int, gen: torch.Generator) -> QuantLinear:
    K, N = lin.in_features, lin.out_features
    dev = lin.weight.device
    q = QuantLinear(bits, group_size, K, N, bias=lin.bias is not None, dtype=torch.float16, device=dev)
    with torch.no_grad():
        words = lambda t: t.copy_(torch.randint(-2**31, 2**31 - 1, t.shape, dtype=torch.int32, device=dev,
                                                generator=gen))
        words(q.qweight)
        words(q.qzeros)
        # |W| ~ scale * 8: keeps activations of a deep random network finite
        q.scales.copy_(torch.rand(q.scales.shape, device=dev, generator=gen) * 2e-3 + 1e-3)
        if lin.bias is not None:
            q.bias.copy_(lin.bias)
    return q


def quantize_model(model: nn.Module, bits: int, group_size: int) -> None:
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(0)
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(parent, name, random_quant_linear(child, bits, group_size, gen))
    if next(model.parameters()).is_cuda:
        torch.cuda.empty_cache()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_generate(model, ids, new: int, device: str) -> float:
    sync(device)
    t0 = time.perf_counter()
    model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False, cache_implementation="static")
    sync(device)
    return time.perf_counter() - t0


def bench_model(model, name: str, args, results: list) -> None:
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    # generate() compiles the decoding step itself when the cache is static (transformers' auto-compile,
    # which also marks CUDA-graph steps); wrapping model.forward in torch.compile as well breaks that.
    from transformers import CompileConfig

    if args.no_compile:
        model.generation_config.disable_compile = True
    else:
        model.generation_config.compile_config = CompileConfig(fullgraph=True, mode="reduce-overhead")
    for batch in args.batch:
        ids = torch.randint(1, model.config.vocab_size, (batch, args.prompt), device=args.device)
        for _ in range(2):  # warm-up: compiles the decode step
            time_generate(model, ids, args.new, args.device)
            time_generate(model, ids, 1, args.device)
        prefill = statistics.median(time_generate(model, ids, 1, args.device) for _ in range(args.reps))
        total = statistics.median(time_generate(model, ids, args.new, args.device) for _ in range(args.reps))
        decode_tps = batch * (args.new - 1) / max(total - prefill, 1e-9)
        r = dict(model=name, batch=batch, prompt=args.prompt, new_tokens=args.new, prefill_ms=prefill * 1e3,
                 generate_s=total, decode_tokens_per_s=decode_tps, compiled=not args.no_compile)
        results.append(r)
        print(f"{name:14s} batch {batch:3d}: prefill {prefill * 1e3:8.1f} ms, generate {total:7.2f} s, "
              f"decode {decode_tps:9.1f} tokens/s", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--small", action="store_true", help="a tiny model (checks the script, not a result)")
    args = ap.parse_args()
    from transformers import LlamaForCausalLM

    cfg = llama_config(args.layers, args.small)
    results = []
    torch.manual_seed(0)
    with torch.device(args.device):
        model = LlamaForCausalLM(cfg).to(torch.float16).eval()
    bench_model(model, "fp16", args, results)
    del model
    if args.device == "cuda":
        torch.cuda.empty_cache()
    with torch.device(args.device):
        model = LlamaForCausalLM(cfg).to(torch.float16).eval()
    quantize_model(model, args.bits, 128)
    summary = post_init_model(model)
    print(summary)
    bench_model(model, f"gptq {args.bits}-bit g128", args, results)
    info = dict(
        benchmark="bench_decode",
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device=torch.cuda.get_device_name() if args.device == "cuda" else args.device,
        torch=torch.__version__, gptq=gptq.__version__, transformers=__import__("transformers").__version__,
        config=dict(layers=args.layers, small=args.small, prompt=args.prompt, new=args.new),
        backends=summary, results=results,
    )
    with open(args.out + ".json", "w") as f:
        json.dump(info, f, indent=1)


if __name__ == "__main__":
    main()
