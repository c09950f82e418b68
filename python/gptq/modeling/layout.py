"""Where the quantizable parts of a transformers decoder are: the list of decoder layers and the linear
layers inside one layer, found automatically, with a small table for what automation cannot know.

Discovery rules (no per-family code is needed for the common decoders):
  * the decoder layers are the `nn.ModuleList` whose length is the configuration's layer count
    (`num_hidden_layers`, `n_layer`, `num_layers`); ties go to the usual names (`model.layers`,
    `transformer.h`, `model.decoder.layers`, `gpt_neox.layers`, ...);
  * the quantizable modules of a layer are its `nn.Linear` and transformers `Conv1D` children, minus
    those the packed format cannot hold (in_features % 32 != 0, out_features not a multiple of the
    zero-point packing period) and MoE routers (a linear with one output per expert);
  * fused MoE experts (transformers 5 keeps them as 3-D parameters `gate_up_proj` [E, 2I, H] and
    `down_proj` [E, H, I]) are first split into one small MLP of `nn.Linear` per expert, so each
    expert matrix is quantized and stored like any other linear (`experts.{e}.gate_proj.qweight`...).
The execution order and the true-sequential groups are found by running a layer (see quantizer.py).

A model with an unusual layout can be declared with `register_layout(model_type, ...)`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import torch
from torch import nn

logger = logging.getLogger("gptq")

try:  # transformers' GPT-2 style linear: weight is [in_features, out_features]
    from transformers.pytorch_utils import Conv1D
except Exception:  # pragma: no cover - transformers missing
    class Conv1D(nn.Module):  # type: ignore[no-redef]
        pass

BLOCK_NAME_PREFERENCE = ("model.layers", "transformer.h", "model.decoder.layers", "gpt_neox.layers",
                         "model.language_model.layers", "h", "decoder.layers", "layers")


@dataclass
class Layout:
    """How to find and quantize the decoder layers of one model family.

    layers_block_name: dotted path of the nn.ModuleList of decoder layers (None: discover).
    inside_layer_modules: optional list of groups (lists) of module names relative to a layer, in
        execution order, as AutoGPTQ's `inside_layer_modules`; names may contain '*' for any path
        component (e.g. 'mlp.experts.*.gate_proj'). None: every quantizable linear, grouped by running
        the layer.
    expert_names: names for the (gate, up, down) linears of split MoE experts.
    legacy_renames: (old, new) substrings applied to checkpoint tensor names on load (older
        transformers module paths).
    """

    layers_block_name: str | None = None
    inside_layer_modules: list[list[str]] | None = None
    expert_names: tuple[str, str, str] = ("gate_proj", "up_proj", "down_proj")
    legacy_renames: list[tuple[str, str]] = field(default_factory=list)


LAYOUTS: dict[str, Layout] = {
    # Mixtral's checkpoints name the expert linears w1 (gate), w3 (up), w2 (down) under
    # block_sparse_moe; transformers 5 calls the block `mlp`.
    "mixtral": Layout(expert_names=("w1", "w3", "w2"), legacy_renames=[(".block_sparse_moe.", ".mlp.")]),
}


def register_layout(model_type: str, layers_block_name: str | None = None,
                    inside_layer_modules: list[list[str]] | None = None,
                    expert_names: tuple[str, str, str] | None = None) -> None:
    """Declares how to find a model family's decoder layers and linears (config.model_type)."""
    base = LAYOUTS.get(model_type, Layout())
    LAYOUTS[model_type] = Layout(layers_block_name=layers_block_name or base.layers_block_name,
                                 inside_layer_modules=inside_layer_modules or base.inside_layer_modules,
                                 expert_names=expert_names or base.expert_names,
                                 legacy_renames=list(base.legacy_renames))


def layout_for(model: nn.Module) -> Layout:
    return LAYOUTS.get(getattr(getattr(model, "config", None), "model_type", None), Layout())


def num_layers(config) -> int | None:
    for key in ("num_hidden_layers", "n_layer", "num_layers", "n_layers"):
        v = getattr(config, key, None)
        if isinstance(v, int) and v > 0:
            return v
    text = getattr(config, "text_config", None)
    return num_layers(text) if text is not None else None


class LayoutError(ValueError):
    pass


def _declare_hint(model: nn.Module) -> str:
    mt = getattr(getattr(model, "config", None), "model_type", "<model_type>")
    return (f"declare it with gptq.modeling.register_layout({mt!r}, layers_block_name='<dotted path of the "
            f"nn.ModuleList of decoder layers>', inside_layer_modules=[['self_attn.q_proj', ...], ...])")


def find_layers_block(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(dotted name, ModuleList) of the decoder layers."""
    layout = layout_for(model)
    modules = dict(model.named_modules())
    if layout.layers_block_name is not None:
        block = modules.get(layout.layers_block_name)
        if not isinstance(block, nn.ModuleList):
            raise LayoutError(f"{type(model).__name__}: the declared layers_block_name "
                              f"{layout.layers_block_name!r} is not an nn.ModuleList in the model")
        return layout.layers_block_name, block
    n = num_layers(getattr(model, "config", None)) if hasattr(model, "config") else None
    candidates = [(name, m) for name, m in modules.items()
                  if isinstance(m, nn.ModuleList) and len(m) > 0
                  and len({type(c) for c in m}) == 1 and (n is None or len(m) == n)]
    if not candidates:
        raise LayoutError(
            f"{type(model).__name__}: cannot find the decoder layers: no nn.ModuleList of "
            f"{n if n is not None else 'identical'} identical layers (config layer count "
            f"{n}); {_declare_hint(model)}")

    def rank(item):
        name = item[0]
        pref = BLOCK_NAME_PREFERENCE.index(name) if name in BLOCK_NAME_PREFERENCE else len(BLOCK_NAME_PREFERENCE)
        return (pref, -len(item[1]), name.count("."))

    candidates.sort(key=rank)
    return candidates[0]


def quantizable(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, Conv1D))


def linear_shape(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of an nn.Linear or Conv1D."""
    if isinstance(module, Conv1D):
        k, n = module.weight.shape
        return k, n
    return module.in_features, module.out_features


def weight_out_in(module: nn.Module) -> torch.Tensor:
    """The weight as [out_features, in_features] (Conv1D stores its transpose)."""
    return module.weight.t() if isinstance(module, Conv1D) else module.weight


def packable_reason(module: nn.Module, bits: int) -> str | None:
    """None when the GPTQ format can hold this linear at `bits`, else why not."""
    k, n = linear_shape(module)
    period = 32 if bits == 3 else 32 // bits
    if k % 32:
        return f"in_features={k} is not a multiple of 32"
    if n % period:
        return f"out_features={n} is not a multiple of {period}"
    return None


def _num_experts(config) -> int | None:
    for key in ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts"):
        v = getattr(config, key, None)
        if isinstance(v, int) and v > 1:
            return v
    return None


def find_linears(layer: nn.Module, config=None, bits: int = 4) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """({name: module} of the linears to quantize, {name: reason} of those left in float)."""
    experts = _num_experts(config) if config is not None else None
    take, skip = {}, {}
    for name, m in layer.named_modules():
        if not quantizable(m):
            continue
        _, n = linear_shape(m)
        if experts is not None and n == experts and re.search(r"(^|\.)(gate|router|wg)$", name):
            skip[name] = f"MoE router ({n} outputs, one per expert)"
            continue
        why = packable_reason(m, bits)
        if why:
            skip[name] = why
            continue
        take[name] = m
    return take, skip


def role(name: str) -> str:
    """A module name with numeric path components replaced by '*' (experts.3.w1 -> experts.*.w1)."""
    return ".".join("*" if p.isdigit() else p for p in name.split("."))


def match(pattern: str, name: str) -> bool:
    return re.fullmatch(re.escape(pattern).replace(r"\*", r"[^.]+"), name) is not None


# ---- MoE: split fused 3-D expert parameters into per-expert nn.Linear --------------------------------
class _Expert(nn.Module):
    def __init__(self, hidden: int, inter: int, names: tuple[str, str, str], bias: bool, dtype, device):
        super().__init__()
        self._names = names
        g, u, d = names
        setattr(self, g, nn.Linear(hidden, inter, bias=bias, dtype=dtype, device=device))
        setattr(self, u, nn.Linear(hidden, inter, bias=bias, dtype=dtype, device=device))
        setattr(self, d, nn.Linear(inter, hidden, bias=bias, dtype=dtype, device=device))


class SplitExperts(nn.ModuleList):
    """Drop-in replacement of a transformers fused-experts module (forward(hidden [T, H],
    top_k_index [T, k], top_k_weights [T, k]) -> [T, H]) holding one nn.Linear per expert matrix.

    Computes exactly what the eager fused forward computes: for each expert with routed tokens,
    down(gate_fn(gate(x), up(x))) weighted by the router weight, summed into the token's output.
    The gating function is the original class's `_apply_gate`, fed the [gate | up] halves in the
    original layout, so model-specific activations (clamped SwiGLU, ...) are kept.
    Being a ModuleList, its experts are named `<path>.experts.{e}.{gate,up,down}` like the per-expert
    checkpoints of transformers 4.
    """

    def __init__(self, fused: nn.Module, names: tuple[str, str, str]):
        super().__init__()
        self.num_experts = int(fused.num_experts)
        self.is_concatenated = bool(getattr(fused, "is_concatenated", True))
        self.has_bias = bool(getattr(fused, "has_bias", False))
        self._act = [getattr(fused, "act_fn", None)]  # a list: ModuleList children must be experts only
        gu = fused.gate_up_proj
        transposed = bool(getattr(fused, "is_transposed", False))
        if transposed:  # [E, H, 2I]
            hidden, inter = gu.shape[1], gu.shape[2] // 2
        else:  # [E, 2I, H]
            hidden, inter = gu.shape[2], gu.shape[1] // 2
        self.hidden_dim, self.intermediate_dim = hidden, inter
        self._apply_gate_fn = type(fused)._apply_gate if hasattr(type(fused), "_apply_gate") else None
        self._gate_owner = [fused]  # a plain list so the fused module is not a child (no state dict)
        device, dtype = gu.device, gu.dtype
        self.extend(_Expert(hidden, inter, names, self.has_bias, dtype, device) for _ in range(self.num_experts))
        self._names = names
        if device.type != "meta":
            self._copy_from(fused, transposed)
        # drop the fused tensors from the kept reference (it only serves _apply_gate)
        for p in ("gate_up_proj", "down_proj", "gate_up_proj_bias", "down_proj_bias"):
            if p in fused._parameters:
                del fused._parameters[p]

    @torch.no_grad()
    def _copy_from(self, fused: nn.Module, transposed: bool) -> None:
        g_name, u_name, d_name = self._names
        inter = self.intermediate_dim
        for e, ex in enumerate(self):
            gu = fused.gate_up_proj[e]
            dn = fused.down_proj[e]
            if transposed:
                gu, dn = gu.t(), dn.t()
            gate, up = (gu[:inter], gu[inter:]) if self.is_concatenated else (gu[0::2], gu[1::2])
            getattr(ex, g_name).weight.copy_(gate)
            getattr(ex, u_name).weight.copy_(up)
            getattr(ex, d_name).weight.copy_(dn)
            if self.has_bias:
                gub = fused.gate_up_proj_bias[e]
                gb, ub = (gub[:inter], gub[inter:]) if self.is_concatenated else (gub[0::2], gub[1::2])
                getattr(ex, g_name).bias.copy_(gb)
                getattr(ex, u_name).bias.copy_(ub)
                getattr(ex, d_name).bias.copy_(fused.down_proj_bias[e])

    def _gate(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        if self._apply_gate_fn is None:
            return self._act[0](gate) * up
        if self.is_concatenated:
            fused = torch.cat([gate, up], dim=-1)
        else:
            fused = torch.stack([gate, up], dim=-1).flatten(-2)
        owner = self._gate_owner[0]
        return self._apply_gate_fn(owner, fused)

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor):
        g_name, u_name, d_name = self._names
        out = torch.zeros_like(hidden_states)
        with torch.no_grad():
            mask = torch.nn.functional.one_hot(top_k_index, num_classes=self.num_experts).permute(2, 1, 0)
            hit = torch.greater(mask.sum(dim=(-1, -2)), 0).nonzero()
        for e in hit[:, 0].tolist():
            pos, tok = torch.where(mask[e])
            x = hidden_states[tok]
            ex = self[e]
            h = self._gate(getattr(ex, g_name)(x), getattr(ex, u_name)(x))
            h = getattr(ex, d_name)(h) * top_k_weights[tok, pos, None]
            out.index_add_(0, tok, h.to(out.dtype))
        return out


def is_fused_experts(module: nn.Module) -> bool:
    p = getattr(module, "_parameters", {})
    gu, dn = p.get("gate_up_proj"), p.get("down_proj")
    return (gu is not None and dn is not None and gu.dim() == 3 and dn.dim() == 3
            and hasattr(module, "num_experts"))


def split_fused_experts(model: nn.Module) -> int:
    """Replaces every fused-experts module by SplitExperts; returns how many were replaced."""
    names = layout_for(model).expert_names
    todo = [(name, m) for name, m in model.named_modules() if is_fused_experts(m)]
    for name, m in todo:
        if getattr(m, "has_gate", True) is False:
            raise LayoutError(f"{name} ({type(m).__name__}): fused experts without a gate projection are not "
                              f"supported; {_declare_hint(model)}")
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, SplitExperts(m, names))
    if todo:
        logger.info("gptq: split %d fused MoE expert module(s) into per-expert linears (%s)", len(todo),
                    "/".join(names))
    return len(todo)
