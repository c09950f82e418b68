"""The ``gptq`` command line (also ``python -m gptq``).

  gptq env                          versions, CUDA, GPUs and the compiled kernel families
  gptq quantize MODEL OUT [...]     GPTQ-quantize a transformers causal LM, save a checkpoint
  gptq eval MODEL [...]             perplexity of a float or quantized model (standard protocol)
  gptq demo [...]                   quantize SmolLM2-135M offline and compare float / RTN / GPTQ
"""

from __future__ import annotations

import argparse
import logging
import sys


def _add_env(sub):
    p = sub.add_parser("env", help="print versions, CUDA, GPUs and the compiled kernel families")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _add_quantize(sub):
    p = sub.add_parser("quantize", help="GPTQ-quantize a transformers causal LM and save the checkpoint")
    p.add_argument("model", help="folder or Hugging Face id of the float model")
    p.add_argument("out", help="folder to write the quantized checkpoint to")
    p.add_argument("--bits", type=int, default=4, choices=(2, 3, 4, 8))
    p.add_argument("--group-size", type=int, default=128, help="-1 for one group per output row (default 128)")
    p.add_argument("--desc-act", action=argparse.BooleanOptionalAction, default=False,
                   help="act-order: quantize columns by decreasing Hessian diagonal (default off)")
    p.add_argument("--static-groups", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--sym", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--true-sequential", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--damp", type=float, default=0.01, help="damp_percent (default 0.01)")
    p.add_argument("--format", default="gptq", choices=("gptq", "gptq_v2"), help="checkpoint_format")
    p.add_argument("--nsamples", type=int, default=128, help="calibration sequences (default 128)")
    p.add_argument("--seqlen", type=int, default=2048, help="tokens per calibration sequence (default 2048)")
    p.add_argument("--calibration", nargs="*", default=None,
                   help="text files to calibrate on (default: the passages shipped in gptq.data)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--dtype", default=None, choices=("float16", "bfloat16", "float32"),
                   help="compute dtype (default float16 on a GPU, float32 on the CPU)")
    p.add_argument("--device", default=None, help="device for the layer being quantized (default cuda:0 or cpu)")
    p.add_argument("--gguf-file", default=None, help="load MODEL/GGUF_FILE through transformers' GGUF support")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--max-shard-size", default="10GB")
    p.add_argument("--cache-on-cpu", action="store_true", help="keep calibration activations on the CPU")


def _add_eval(sub):
    p = sub.add_parser("eval", help="perplexity with the standard protocol (non-overlapping windows)")
    p.add_argument("model", help="folder of a quantized checkpoint or of a float transformers model")
    p.add_argument("--text", nargs="*", default=None, help="text files (joined with blank lines); default: "
                   "the held-out texts shipped in gptq.data")
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--max-windows", type=int, default=None, help="only the first windows of each text")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, choices=("float16", "bfloat16", "float32"))
    p.add_argument("--gguf-file", default=None)
    p.add_argument("--backend", default="auto")
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def _add_demo(sub):
    p = sub.add_parser("demo", help="quantize SmolLM2-135M-Instruct offline; float vs RTN vs GPTQ perplexity")
    p.add_argument("--device", default=None)
    p.add_argument("--nsamples", type=int, default=32, help="calibration sequences (default 32)")
    p.add_argument("--calib-len", type=int, default=256, help="tokens per calibration sequence (default 256)")
    p.add_argument("--eval-windows", type=int, default=2, help="2048-token windows per held-out text (default 2)")
    p.add_argument("--out", default=None, help="where to save the 4-bit checkpoint (default: <tmp>/gptq-demo-smollm2-4bit-g128)")
    p.add_argument("--results", default=None, help="also write the table to RESULTS.md and RESULTS.json")
    p.add_argument("--desc-act", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--calib-seed", type=int, default=None,
                   help="draw the calibration passages with this seed (default: the fixed first passages)")


def _dtype(name, device):
    import torch

    if name:
        return getattr(torch, name)
    return torch.float16 if str(device).startswith("cuda") else torch.float32


def _default_device():
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def cmd_quantize(a) -> int:
    from gptq import AutoGPTQForCausalLM, BaseQuantizeConfig
    from gptq.data import calibration_examples

    device = a.device or _default_device()
    qc = BaseQuantizeConfig(bits=a.bits, group_size=a.group_size, desc_act=a.desc_act, static_groups=a.static_groups,
                            sym=a.sym, true_sequential=a.true_sequential, damp_percent=a.damp,
                            checkpoint_format=a.format)
    kw = {"gguf_file": a.gguf_file} if a.gguf_file else {}
    model = AutoGPTQForCausalLM.from_pretrained(a.model, qc, torch_dtype=_dtype(a.dtype, device),
                                                trust_remote_code=a.trust_remote_code, **kw)
    tok = model._get_tokenizer()
    if a.calibration:
        text = "\n\n".join(open(f, encoding="utf-8").read() for f in a.calibration)
        ids = tok(text, return_tensors="pt")["input_ids"][0]
        n = min(a.nsamples, ids.numel() // a.seqlen)
        if n < 1:
            print(f"gptq quantize: the calibration text has {ids.numel()} tokens, fewer than --seqlen {a.seqlen}",
                  file=sys.stderr)
            return 2
        examples = [{"input_ids": ids[i * a.seqlen:(i + 1) * a.seqlen], "attention_mask": [1] * a.seqlen}
                    for i in range(n)]
    else:
        examples = calibration_examples(tok, a.nsamples, a.seqlen)
    model.quantize(examples, batch_size=a.batch_size, cache_examples_on_gpu=not a.cache_on_cpu, device=device)
    model.save_quantized(a.out, max_shard_size=a.max_shard_size, tokenizer=tok)
    print(f"gptq quantize: wrote {a.out}")
    return 0


def _is_quantized(folder) -> bool:
    import json
    from pathlib import Path

    f = Path(folder)
    if (f / "quantize_config.json").is_file() or (f / "quant_config.json").is_file():
        return True
    cfg = f / "config.json"
    if cfg.is_file():
        q = json.loads(cfg.read_text()).get("quantization_config") or {}
        return q.get("quant_method") == "gptq"
    return False


def cmd_eval(a) -> int:
    import json

    from gptq.eval import perplexity

    device = a.device or _default_device()
    dtype = _dtype(a.dtype, device)
    if _is_quantized(a.model):
        from gptq import AutoGPTQForCausalLM

        model = AutoGPTQForCausalLM.from_quantized(a.model, device=device, torch_dtype=dtype, backend=a.backend)
        tok = model.tokenizer
        if tok is None:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(a.model)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kw = {"gguf_file": a.gguf_file} if a.gguf_file else {}
        tok = AutoTokenizer.from_pretrained(a.model, **kw)
        model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype, **kw).to(device)
    if a.text:
        texts = {", ".join(a.text): "\n\n".join(open(f, encoding="utf-8").read() for f in a.text)}
    else:
        from gptq.data import EVAL_TEXTS, eval_text

        texts = {n: eval_text(n) for n in EVAL_TEXTS}
    out = {}
    for name, text in texts.items():
        r = perplexity(model, tok, text, seqlen=a.seqlen, max_windows=a.max_windows, progress=True)
        out[name] = {"ppl": r.ppl, **r.protocol, "seconds": round(r.seconds, 2)}
        if not a.json:
            print(f"{name}: perplexity {r.ppl:.4f} ({r.windows} windows of {r.protocol['context']} tokens, "
                  f"{r.predicted_tokens} predicted tokens, {r.seconds:.1f} s)")
    if a.json:
        print(json.dumps(out, indent=2))
    return 0


def cmd_demo(a) -> int:
    from gptq.modeling.demo import run

    report = run(device=a.device, nsamples=a.nsamples, calib_len=a.calib_len, eval_windows=a.eval_windows,
                 out=a.out, results=a.results, desc_act=a.desc_act, calib_seed=a.calib_seed)
    return 0 if all(c["pass"] for c in report["quality_bar"].values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gptq", description="GPTQ quantization and inference.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_env(sub)
    _add_quantize(sub)
    _add_eval(sub)
    _add_demo(sub)
    args = parser.parse_args(argv)
    if args.command != "env":
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        logging.getLogger("gptq").setLevel(logging.INFO)

    if args.command == "env":
        import gptq

        if args.json:
            import json

            from gptq.env import collect

            print(json.dumps(collect(), indent=2))
        else:
            gptq.env()
        return 0
    if args.command == "quantize":
        return cmd_quantize(args)
    if args.command == "eval":
        return cmd_eval(args)
    if args.command == "demo":
        return cmd_demo(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
