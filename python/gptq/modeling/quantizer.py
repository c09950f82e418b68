"""Layer-by-layer GPTQ of a transformers decoder.

1. Calibration batches go through the model once with every decoder layer replaced by a recorder:
   the first recorder keeps the hidden states entering layer 0, every recorder keeps the other
   arguments its layer receives (attention mask, position ids/embeddings, ...; some models give
   layers different masks, e.g. sliding-window layers), and the last one stops the forward.
   Only the modules outside the layer list (embeddings, rotary tables) visit the GPU for this.
2. For each layer in turn (the only one on the GPU):
   * a trace run on the first batch records the order in which its linears are called and which
     ones receive the very same input tensor (q/k/v, gate/up share theirs): those share one
     Hessian, and with true_sequential they form one group; modules with the same role in
     different MoE experts (experts.*.gate_proj) join one group too;
   * per group: forward pre-hooks feed the inputs (padding excluded) into HessianAccumulators while
     the calibration batches run through the layer (stopping right after the group's last input
     when the layer's call order allows), then each member is GPTQ-quantized and its weight replaced
     by the dequantized one, so later groups see the quantized outputs;
   * the linears become QuantLinear, and the calibration batches run through the quantized layer to
     give the next layer's inputs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .layout import (
    Conv1D,
    LayoutError,
    find_layers_block,
    find_linears,
    layout_for,
    linear_shape,
    match,
    role,
    weight_out_in,
)

logger = logging.getLogger("gptq")


class _Stop(Exception):
    """Raised from a hook to end a forward early; caught by the caller."""


def to_device(obj: Any, device: torch.device | str) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, tuple):
        return tuple(to_device(o, device) for o in obj)
    if isinstance(obj, list):
        return [to_device(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


# ---- calibration examples --------------------------------------------------------------------------
def _as_ids(x) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.tensor(x, dtype=torch.long)
    return t.long()


def normalize_examples(examples, tokenizer=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One (input_ids [L], attention_mask [L]) pair per calibration sequence.

    Accepts what AutoGPTQ and GPTQModel accept: tokenizer outputs (dicts or BatchEncodings with
    input_ids and attention_mask as lists or tensors, 1-D or batched 2-D), lists of token ids, or
    plain strings (tokenized with `tokenizer`).
    """
    if isinstance(examples, (str, dict)) or hasattr(examples, "keys"):
        examples = [examples]
    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    for i, ex in enumerate(examples):
        if isinstance(ex, str):
            if tokenizer is None:
                raise ValueError("quantize: calibration examples are strings but no tokenizer was given "
                                 "(pass tokenizer=... to quantize() or from_pretrained())")
            ex = tokenizer(ex)
        if hasattr(ex, "keys"):
            if "input_ids" not in ex:
                raise ValueError(f"quantize: example {i} has no 'input_ids' (keys: {sorted(ex.keys())})")
            ids = _as_ids(ex["input_ids"])
            mask = _as_ids(ex["attention_mask"]) if ex.get("attention_mask") is not None else torch.ones_like(ids)
        elif isinstance(ex, (list, tuple, torch.Tensor)):
            ids = _as_ids(ex)
            mask = torch.ones_like(ids)
        else:
            raise ValueError(f"quantize: example {i} must be a string, a dict with input_ids, or a list of "
                             f"token ids, got {type(ex).__name__}")
        if ids.shape != mask.shape:
            raise ValueError(f"quantize: example {i}: input_ids {tuple(ids.shape)} and attention_mask "
                             f"{tuple(mask.shape)} differ in shape")
        rows = ids.reshape(-1, ids.shape[-1]) if ids.dim() > 0 else ids.reshape(1, 1)
        mrows = mask.reshape(rows.shape)
        for r, m in zip(rows, mrows):
            keep = int(m.sum())
            if keep == 0:
                continue
            out.append((r, m))
    if not out:
        raise ValueError("quantize: no calibration tokens (every example is empty)")
    return out


def make_batches(seqs, batch_size: int, pad_token_id: int) -> list[dict[str, torch.Tensor]]:
    """Right-padded batches of `batch_size` sequences."""
    if batch_size < 1:
        raise ValueError(f"quantize: batch_size must be >= 1, got {batch_size}")
    batches = []
    for s in range(0, len(seqs), batch_size):
        chunk = seqs[s:s + batch_size]
        L = max(ids.shape[0] for ids, _ in chunk)
        ids = torch.full((len(chunk), L), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), L), dtype=torch.long)
        for r, (i, m) in enumerate(chunk):
            ids[r, : i.shape[0]] = i
            mask[r, : m.shape[0]] = m
        batches.append({"input_ids": ids, "attention_mask": mask})
    return batches


# ---- step 1: inputs of every layer ---------------------------------------------------------------
class _Recorder(nn.Module):
    """Stands in for decoder layer `index` during input capture (see module docstring)."""

    def __init__(self, layer: nn.Module, index: int, sink: dict, last: int, structure):
        super().__init__()
        self._wrapped = [layer]  # not a child: it must not move with the model
        self.index, self.sink, self.last, self.structure = index, sink, last, structure

    def __getattr__(self, name):  # model loops read attributes such as attention_type
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_wrapped"][0], name)

    def forward(self, *args, **kwargs):
        if args:
            hidden, rest = args[0], ("args", args[1:])
        else:
            hidden, rest = kwargs.pop("hidden_states"), ("kwargs", ())
        self.sink.setdefault("kwargs", {})[self.index] = (rest[1], kwargs, rest[0] == "args")
        if self.index == 0:
            self.sink["hidden"] = hidden
        if self.index == self.last or self.structure is None:
            raise _Stop
        kind, n = self.structure
        return hidden if kind == "tensor" else (hidden,) + (None,) * (n - 1)


@dataclass
class LayerInputs:
    hidden: list[torch.Tensor]  # per batch, on the cache device
    masks: list[torch.Tensor]  # per batch attention_mask [B, L] (on the compute device)
    # per layer, per batch: (extra positional args, kwargs)
    layer_args: list[list[tuple[tuple, dict]]] = field(default_factory=list)


def _run_model(model, batch, device):
    model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
          use_cache=False)


def capture_inputs(model: nn.Module, parent: nn.Module, attr: str, layers: nn.ModuleList, batches,
                   device: torch.device, cache_device: torch.device) -> LayerInputs:
    """Runs the calibration batches up to the decoder layers; see the module docstring."""
    n = len(layers)
    original_device = next(model.parameters()).device
    sink: dict = {}
    result = LayerInputs(hidden=[], masks=[])
    setattr(parent, attr, nn.ModuleList(_Recorder(layers[i], i, sink, n - 1 if i else 0, None) for i in range(n)))
    try:
        model.to(device)
        # pass 1: hidden states entering layer 0
        for b in batches:
            sink.clear()
            try:
                _run_model(model, b, device)
            except _Stop:
                pass
            if "hidden" not in sink:
                raise LayoutError(f"{type(model).__name__}: the forward never reached decoder layer 0 of "
                                  f"'{attr}'; is this the list of decoder layers?")
            result.hidden.append(sink["hidden"].to(cache_device))
            result.masks.append(b["attention_mask"].to(device))
            args0, kw0, _ = sink["kwargs"][0]
            result.layer_args.append([(to_device(args0, cache_device), to_device(kw0, cache_device))])
        if n > 1:
            structure = _output_structure(layers[0], result, device)
            setattr(parent, attr, nn.ModuleList(_Recorder(layers[i], i, sink, n - 1, structure) for i in range(n)))
            for bi, b in enumerate(batches):
                sink.clear()
                try:
                    _run_model(model, b, device)
                except _Stop:
                    pass
                got = sink.get("kwargs", {})
                if len(got) != n:
                    raise LayoutError(f"{type(model).__name__}: the forward called {len(got)} of the {n} "
                                      f"decoder layers in '{attr}'")
                result.layer_args[bi] += [(to_device(got[i][0], cache_device), to_device(got[i][1], cache_device))
                                          for i in range(1, n)]
    finally:
        setattr(parent, attr, layers)
        model.to(original_device)
    # regroup per layer
    per_layer = [[result.layer_args[b][i] for b in range(len(batches))] for i in range(n)]
    result.layer_args = per_layer
    return result


def _first_output(out):
    return out if isinstance(out, torch.Tensor) else out[0]


def _output_structure(layer0: nn.Module, inputs: LayerInputs, device) -> tuple[str, int]:
    """Runs the real layer 0 on the first batch to see whether layers return a tensor or a tuple."""
    original = next(layer0.parameters()).device
    layer0.to(device)
    try:
        args, kw = to_device(inputs.layer_args[0][0], device)
        out = layer0(inputs.hidden[0].to(device), *args, **kw)
    finally:
        layer0.to(original)
    return ("tensor", 1) if isinstance(out, torch.Tensor) else ("tuple", len(out))


# ---- step 2: one layer ------------------------------------------------------------------------------
@dataclass
class Plan:
    groups: list[list[str]]  # module names, in execution order
    leader: dict[str, str]  # module -> module whose Hessian it shares (itself when it leads)
    stop_after: dict[int, str]  # group index -> module whose pre-hook ends the forward (early stop)


def _layer_forward(layer, hidden, args, kw):
    return layer(hidden, *args, **kw)


def trace_layer(layer: nn.Module, linears: dict[str, nn.Module], hidden, args, kw) -> list[tuple[str, int]]:
    """[(module name, id of its input tensor)] in call order for one forward of `layer`."""
    calls: list[tuple[str, int]] = []
    keep: list[torch.Tensor] = []  # holds inputs so ids stay unique during the trace

    def hook(name):
        def fn(module, inputs):
            x = inputs[0]
            keep.append(x)
            calls.append((name, id(x)))
        return fn

    handles = [m.register_forward_pre_hook(hook(name)) for name, m in linears.items()]
    try:
        with torch.no_grad():
            _layer_forward(layer, hidden, args, kw)
    finally:
        for h in handles:
            h.remove()
    return calls


def plan_layer(linears: dict[str, nn.Module], calls: list[tuple[str, int]], true_sequential: bool,
               declared: list[list[str]] | None) -> Plan:
    order = []
    for name, _ in calls:
        if name not in order:
            order.append(name)
    first_input = {}
    for name, xid in calls:
        first_input.setdefault(name, xid)
    # modules never called in the trace (MoE experts without tokens) go after the called ones
    names = order + [n for n in linears if n not in order]
    pos = {n: i for i, n in enumerate(names)}

    # Hessian sharing: same input tensor object in the trace
    leader: dict[str, str] = {}
    by_input: dict[int, str] = {}
    for n in order:
        leader[n] = by_input.setdefault(first_input[n], n)
    for n in names:
        leader.setdefault(n, n)

    if declared is not None:
        groups = []
        for patterns in declared:
            g = [n for n in names if any(match(p, n) for p in patterns)]
            if g:
                groups.append(sorted(g, key=pos.get))
        listed = {n for g in groups for n in g}
        for n in names:
            if n not in listed:
                logger.info("gptq: %s is not in the declared inside_layer_modules; kept in float", n)
        if not true_sequential:
            groups = [sorted(listed, key=pos.get)]
    elif not true_sequential:
        groups = [names]
    else:
        # union-find over "same input" and "same role"
        parent = {n: n for n in names}

        def find(a):
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        def union(a, b):
            ra, rb = find(a), find(b)
            if ra != rb:
                if pos[ra] < pos[rb]:
                    parent[rb] = ra
                else:
                    parent[ra] = rb

        for n in names:
            union(n, leader[n])
        by_role: dict[str, str] = {}
        for n in names:
            r = role(n)
            if r in by_role:
                union(n, by_role[r])
            else:
                by_role[r] = n
        members: dict[str, list[str]] = {}
        for n in names:
            members.setdefault(find(n), []).append(n)
        groups = sorted(members.values(), key=lambda g: min(pos[n] for n in g))

    # early stop: only when each linear runs once per forward and groups do not interleave
    stop_after: dict[int, str] = {}
    once = len(calls) == len(order) == len(names)
    if once:
        group_of = {n: gi for gi, g in enumerate(groups) for n in g}
        seq = [group_of.get(n, -1) for n in order]
        nondecreasing = all(a <= b for a, b in zip([s for s in seq if s >= 0], [s for s in seq if s >= 0][1:]))
        if nondecreasing:
            for gi, g in enumerate(groups):
                stop_after[gi] = max(g, key=pos.get)
    return Plan(groups=groups, leader=leader, stop_after=stop_after)


@dataclass
class ModuleRecord:
    layer: int
    module: str
    loss: float
    damp_percent: float
    seconds: float
    samples: int
    method: str  # "gptq" or "rtn (no calibration tokens)"


@dataclass
class QuantizeStats:
    records: list[ModuleRecord] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # full module name -> reason
    seconds_capture: float = 0.0
    seconds_forward: float = 0.0  # calibration forwards through layers (incl. Hessian hooks)
    seconds_solve: float = 0.0
    seconds_pack: float = 0.0  # building QuantLinear modules
    quantized_names: list[str] = field(default_factory=list)
    layers_block_name: str = ""
    groups: list[list[str]] = field(default_factory=list)  # layer 0's groups (relative names)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def make_quant_linear(qw, module: nn.Module, config, dtype: torch.dtype, backend: str = "auto"):
    from ..nn import QuantLinear

    bias = getattr(module, "bias", None)
    # scales are stored as fp16 in the checkpoint; hold exactly those values in the compute dtype
    scales = qw.scales.to(torch.float16).to(dtype)
    qzeros = qw.qzeros_as(config.checkpoint_format) if config.checkpoint_format != "gptq" else qw.qzeros
    return QuantLinear.from_tensors(
        qw.qweight.cpu(), qzeros.cpu(), scales.cpu(), qw.g_idx.cpu(),
        None if bias is None else bias.detach().to(dtype).cpu(),
        bits=qw.bits, group_size=qw.group_size, checkpoint_format=config.checkpoint_format,
        sym=config.sym, desc_act=None, backend=backend)


def quantize_model(model: nn.Module, batches: list[dict], config, device: torch.device | None = None,
                   cache_examples_on_gpu: bool = True, progress: bool = True, backend: str = "auto") -> QuantizeStats:
    """GPTQ-quantizes `model` (a transformers causal LM) in place; returns the per-module log."""
    from ..quantize import HessianAccumulator, quantize_weight, rtn_quantize_weight

    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        progress = False

    if device is None:
        device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    cache_device = device if cache_examples_on_gpu else torch.device("cpu")
    stats = QuantizeStats()
    block_name, layers = find_layers_block(model)
    stats.layers_block_name = block_name
    parent_name, _, attr = block_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    declared = layout_for(model).inside_layer_modules
    dtype = next(model.parameters()).dtype
    config_hf = getattr(model, "config", None)

    was_training = model.training
    model.eval()
    use_cache = getattr(config_hf, "use_cache", None)
    if use_cache is not None:
        config_hf.use_cache = False
    t0 = time.perf_counter()
    with torch.no_grad():
        inputs = capture_inputs(model, parent, attr, layers, batches, device, cache_device)
    _sync(device)
    stats.seconds_capture = time.perf_counter() - t0

    plan, plan_names, plan_type = None, set(), None
    bar = tqdm(total=len(layers), desc="gptq: layers", unit="layer", disable=not progress, leave=True)
    try:
        for li, layer in enumerate(layers):
            layer_device = next(layer.parameters()).device
            layer.to(device)
            linears, skipped = find_linears(layer, config_hf, config.bits)
            for name, why in skipped.items():
                stats.skipped[f"{block_name}.{li}.{name}"] = why
                if li == 0:
                    logger.info("gptq: %s.%d.%s stays in float: %s", block_name, li, name, why)
            args_l = inputs.layer_args[li]
            if linears:
                t = time.perf_counter()
                if plan is None or set(linears) != plan_names or type(layer) is not plan_type:
                    # the call order and shared inputs are properties of the layer's code, so a plan
                    # found by tracing one layer serves every layer of the same class and module names
                    hidden0 = inputs.hidden[0].to(device)
                    a0, k0 = to_device(args_l[0], device)
                    calls = trace_layer(layer, linears, hidden0, a0, k0)
                    del hidden0, a0, k0
                    plan = plan_layer(linears, calls, config.true_sequential, declared)
                    plan_names, plan_type = set(linears), type(layer)
                if li == 0:
                    stats.groups = plan.groups
                _sync(device)
                stats.seconds_forward += time.perf_counter() - t
                results = {}
                mod_bar = tqdm(total=sum(len(g) for g in plan.groups), desc=f"  layer {li}", unit="module",
                               disable=not progress, leave=False)
                for gi, group in enumerate(plan.groups):
                    results.update(_quantize_group(
                        li, layer, linears, group, plan, gi, inputs, args_l, device, config, block_name,
                        stats, HessianAccumulator, quantize_weight, rtn_quantize_weight, mod_bar))
                mod_bar.close()
                t = time.perf_counter()
                for name, qw in results.items():
                    ql = make_quant_linear(qw, linears[name], config, dtype, backend).to(device)
                    ql.post_init(backend=backend)
                    _set_module(layer, name, ql)
                    stats.quantized_names.append(f"{block_name}.{li}.{name}")
                del results
                _sync(device)
                stats.seconds_pack += time.perf_counter() - t
            # the quantized layer's outputs are the next layer's inputs
            t = time.perf_counter()
            with torch.no_grad():
                for b in range(len(inputs.hidden)):
                    a, k = to_device(args_l[b], device)
                    out = _layer_forward(layer, inputs.hidden[b].to(device), a, k)
                    inputs.hidden[b] = _first_output(out).to(cache_device)
                    del out
            _sync(device)
            stats.seconds_forward += time.perf_counter() - t
            layer.to(layer_device)
            for m in layer.modules():
                if hasattr(m, "post_init") and hasattr(m, "qweight"):
                    m.post_init()
            inputs.layer_args[li] = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
            bar.update(1)
    finally:
        bar.close()
        if use_cache is not None:
            config_hf.use_cache = use_cache
        model.train(was_training)
    return stats


def _quantize_group(li, layer, linears, group, plan, gi, inputs, args_l, device, config, block_name, stats,
                    HessianAccumulator, quantize_weight, rtn_quantize_weight, mod_bar):
    # a module shares its leader's Hessian only when the leader is quantized in the same group
    leader = {n: (plan.leader[n] if plan.leader[n] in group else n) for n in group}
    accs = {lead: HessianAccumulator(linear_shape(linears[lead])[0], device=device)
            for lead in dict.fromkeys(leader[n] for n in group)}
    state = {"mask": None}
    stop_name = plan.stop_after.get(gi)

    def hook(name):
        lead = name == leader[name]

        def fn(module, args):
            if lead:
                x = args[0]
                mask = state["mask"]
                if mask is not None and tuple(x.shape[:-1]) != tuple(mask.shape):
                    if x.shape[:-1].numel() == mask.numel():  # flattened tokens, e.g. [B*L, H]
                        mask = mask.reshape(x.shape[:-1])
                    else:
                        mask = None  # gathered tokens (MoE experts): padding cannot be told apart here
                accs[name].add_batch(x, mask)
            if name == stop_name:
                raise _Stop
        return fn

    handles = [linears[n].register_forward_pre_hook(hook(n)) for n in group]
    t = time.perf_counter()
    try:
        with torch.no_grad():
            for b in range(len(inputs.hidden)):
                m = inputs.masks[b]
                state["mask"] = m if not bool(m.all()) else None
                a, k = to_device(args_l[b], device)
                try:
                    _layer_forward(layer, inputs.hidden[b].to(device), a, k)
                except _Stop:
                    pass
    finally:
        for h in handles:
            h.remove()
    _sync(device)
    stats.seconds_forward += time.perf_counter() - t

    results = {}
    for name in group:
        module = linears[name]
        full = f"{block_name}.{li}.{name}"
        acc = accs[leader[name]]
        w = weight_out_in(module).detach()
        t = time.perf_counter()
        if acc.nsamples > 0:
            qw = quantize_weight(w, acc, config, name=full)
            method = "gptq"
        else:
            qw = rtn_quantize_weight(w, config, name=full)
            method = "rtn (no calibration tokens)"
            logger.warning("gptq: %s received no calibration tokens; quantized with round-to-nearest", full)
        _sync(device)
        secs = time.perf_counter() - t
        stats.seconds_solve += secs
        with torch.no_grad():
            deq = qw.dequantize(module.weight.dtype)
            module.weight.copy_(deq.t() if isinstance(module, Conv1D) else deq)
        results[name] = qw
        stats.records.append(ModuleRecord(li, name, float(qw.loss), float(qw.damp_percent), secs,
                                          int(acc.nsamples), method))
        mod_bar.set_postfix_str(f"{name} loss={qw.loss:.4g}")
        mod_bar.update(1)
    del accs
    return results


def rtn_quantize_model(model: nn.Module, config, backend: str = "auto", device=None) -> list[ModuleRecord]:
    """Round-to-nearest baseline: every quantizable linear of the decoder layers on GPTQ's grid,
    without calibration, replaced by a QuantLinear in place."""
    from ..quantize import rtn_quantize_weight
    from .layout import split_fused_experts

    split_fused_experts(model)
    block_name, layers = find_layers_block(model)
    dtype = next(model.parameters()).dtype
    records = []
    for li, layer in enumerate(layers):
        linears, _ = find_linears(layer, getattr(model, "config", None), config.bits)
        for name, module in linears.items():
            w = weight_out_in(module).detach()
            if device is not None:
                w = w.to(device)
            t = time.perf_counter()
            qw = rtn_quantize_weight(w, config, name=f"{block_name}.{li}.{name}")
            records.append(ModuleRecord(li, name, float(qw.loss), 0.0, time.perf_counter() - t, 0, "rtn"))
            ql = make_quant_linear(qw, module, config, dtype, backend).to(module.weight.device)
            ql.post_init(backend=backend)
            _set_module(layer, name, ql)
    return records
