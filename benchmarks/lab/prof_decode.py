"""Where a decode step's time goes: the Llama-2-7B-shaped models of bench_decode.py (fp16 and 4-bit g128),
batch 1 and 16, compiled as there; torch.profiler over one generate of NEW tokens after the warm-up.
Prints the wall time a decode step and the kernels of the profiled generate by total time.

    python benchmarks/lab/prof_decode.py        (a CUDA GPU; about 3 minutes on the H100)
"""
import collections
import os
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import torch
from bench_decode import llama_config, quantize_model, time_generate
from gptq.nn import post_init_model
from transformers import LlamaForCausalLM, CompileConfig

NEW = 64
def run(model, name, batch):
    ids = torch.randint(1, 32000, (batch, 512), device="cuda")
    for _ in range(2):
        time_generate(model, ids, NEW, "cuda"); time_generate(model, ids, 1, "cuda")
    pre = min(time_generate(model, ids, 1, "cuda") for _ in range(3))
    tot = min(time_generate(model, ids, NEW, "cuda") for _ in range(3))
    step_ms = (tot - pre) / (NEW - 1) * 1e3
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        time_generate(model, ids, NEW, "cuda")
    agg = collections.Counter(); cnt = collections.Counter()
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            agg[e.name] += e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
            cnt[e.name] += 1
    total_us = sum(agg.values())
    print(f"== {name} batch {batch}: wall {step_ms:.3f} ms a decode step (min of 3; prefill {pre*1e3:.1f} ms); "
          f"GPU kernels in the profiled generate: {total_us/1e3:.1f} ms over {NEW} tokens incl. prefill")
    for k, v in agg.most_common(14):
        print(f"  {v/1e3:9.2f} ms  {cnt[k]:6d} calls  {k[:110]}")

cfg = llama_config(32, False)
torch.manual_seed(0)
for quant in (False, True):
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.float16).eval()
    if quant:
        quantize_model(model, 4, 128); post_init_model(model)
    model.generation_config.eos_token_id = None; model.generation_config.pad_token_id = 0
    model.generation_config.compile_config = CompileConfig(fullgraph=True, mode="reduce-overhead")
    for b in (1, 16):
        run(model, "gptq 4-bit" if quant else "fp16", b)
    del model; torch.cuda.empty_cache()
