"""Kernel backends of QuantLinear and the automatic choice among them.

A backend turns a layer's checkpoint tensors into whatever its kernel wants (once, at load: repacking,
permutations) and computes y = x W^T (the layer adds the bias). `select_backend` picks the fastest
valid backend for the layer's bits, group size, act-order, device and GPU architecture, or honours an
explicit name, or refuses it with the reason.

Backends (in the order backend="auto" tries them; see `_auto_order`):
  exllamav2  act-order rows sorted by g_idx at load (x's columns gathered per call: inside the Hopper
             GEMM's x staging, else by a gather kernel launched as a dependent launch), then for 4 bits a
             GEMV (fp16 M = 1: half2 arithmetic; fp16 M = 2..8 and bf16 M = 1..8: the tensor-core
             GEMV, one decode a weight for all tokens) or a tensor-core GEMM from the checkpoint layout
             (fp16 up to M = 16; on Hopper a warpgroup-MMA GEMM from M = 9 up to 1024, 64 on layers of
             4096x4096 or less, for fp16 and bf16; group size -1 or a power of two >= 32), else the
             autogptq kernel on the sorted rows. On compute capability 9.0 these launch as dependent
             launches, prefetching weights while the kernel before them finishes (GPTQ_PDL=0: off).
  autogptq   the checkpoint layout as stored, every bit width, group size and g_idx: split-K GEMV on CUDA
             cores for M <= 16 (with a g_idx out of order, decoded per input channel: M = 1 only),
             dequantize + cuBLAS above. On the CPU (where "auto" picks it): a fused GEMV for M <= 16, fp32
             dequantize + GEMM above.
  torch      dequantize + matmul, on any device, and the only trainable one.
  cutlass    exllamav2, plus a second copy of a 4-bit layer's weights in the layout of CUTLASS's Hopper
             mixed-input GEMM, made at load, which runs batches from 256 rows (where its 128 x 256
             tiles number 80 or more) without exllamav2's per-call conversion; only by name (it doubles the weights' memory),
             compute capability 9.0, builds with the CUTLASS headers.
  marlin     Marlin-style tensor-core kernel (4/8-bit), only by name and only when this build has the
             gptq::marlin_* ops (the marlin helper's branch).
AutoGPTQ's and GPTQModel's kernel names map to these through ALIASES.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

if TYPE_CHECKING:
    from .qlinear import QuantLinear

logger = logging.getLogger("gptq")


@dataclass(frozen=True)
class Backend:
    name: str
    # (layer, device) -> None when usable, else the reason it is not
    unsupported_reason: Callable[["QuantLinear", torch.device], str | None]
    # layer -> None; builds the backend's own buffers from the checkpoint tensors
    prepare: Callable[["QuantLinear"], None]
    # (layer, x [M, K]) -> y [M, N] without bias
    forward: Callable[["QuantLinear", torch.Tensor], torch.Tensor]
    trainable: bool = False  # the input gradient flows through forward (for PEFT/QLoRA)


def _format_id(layer: "QuantLinear") -> int:
    return 1 if layer.checkpoint_format == "gptq" else 2


def _has_kernel(op: str, key: str = "CUDA") -> bool:
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(f"gptq::{op}", key)
    except RuntimeError:  # the op is not registered at all
        return False


def _cuda_reason(layer: "QuantLinear", device: torch.device, op: str) -> str | None:
    """Why a CUDA kernel backend cannot run this layer on `device`, or None."""
    if device.type != "cuda":
        return f"needs a CUDA device, the layer is on {device}"
    if not _has_kernel(op):
        return f"this build of gptq has no CUDA kernel for gptq::{op} (built without the kernels?)"
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        return f"needs compute capability 8.0 or newer, the GPU is sm_{major}{minor}"
    if layer.scales.dtype not in (torch.float16, torch.bfloat16):
        return f"takes float16 or bfloat16 scales, the layer has {layer.scales.dtype}"
    return None


def _trivial_g_idx(layer: "QuantLinear") -> bool:
    """g_idx is k // group_size (no act-order), so kernels may compute groups instead of reading them."""
    K, g = layer.in_features, layer.group_size
    ar = torch.arange(K, dtype=torch.int32, device=layer.g_idx.device)
    expected = ar // g if g != -1 else torch.zeros_like(ar)
    return bool(torch.equal(layer.g_idx, expected))


def _set_buffer(layer: "QuantLinear", name: str, value: torch.Tensor | None) -> None:
    # Non-persistent: repacked tensors follow .to()/.cuda() but never reach the state dict, which
    # keeps the checkpoint layout.
    if name in layer._buffers:
        del layer._buffers[name]
    layer.register_buffer(name, value, persistent=False)


# ---- torch: dequantize to a dense weight, then matmul ------------------------------------------------
def _torch_unsupported(layer: "QuantLinear", device: torch.device) -> str | None:
    return None  # every bit width, group size and act-order, on CPU and CUDA


def _torch_prepare(layer: "QuantLinear") -> None:
    pass


def _torch_forward(layer: "QuantLinear", x: torch.Tensor) -> torch.Tensor:
    w = layer.dequantize_weight()  # [N, K] in scales' dtype; not cached, to keep the 4x memory saving
    return torch.matmul(x.to(w.dtype), w.t())


# ---- autogptq: the checkpoint layout as stored ---------------------------------------------------------
def _autogptq_unsupported(layer: "QuantLinear", device: torch.device) -> str | None:
    if device.type == "cpu":
        # gptq::autogptq_gemm's CPU kernel: a fused GEMV for M <= 16 (W never materialized; 4096x11008
        # at m = 1 takes 23 ms against 224 ms for dequantize + matmul on 2 cores,
        # benchmarks/results/2026-11-22_cpu_gemv_2core.txt), fp32 dequantize + GEMM above.
        if layer.scales.dtype not in (torch.float16, torch.bfloat16, torch.float32):
            return f"takes float16, bfloat16 or float32 scales, the layer has {layer.scales.dtype}"
        return None
    return _cuda_reason(layer, device, "autogptq_gemm")


def _check_g_idx_range(layer: "QuantLinear") -> None:
    # The kernels index scales by g_idx without a per-call check (it would synchronize), so once here.
    G = layer.scales.shape[0]
    lo, hi = int(layer.g_idx.min()), int(layer.g_idx.max())
    if lo < 0 or hi >= G:
        raise ValueError(f"QuantLinear({layer.describe()}): g_idx values must lie in [0, {G}), found [{lo}, {hi}]")


def _autogptq_prepare(layer: "QuantLinear") -> None:
    # Contiguous groups are computed from k; only a real act-order g_idx is handed to the kernel.
    trivial = _trivial_g_idx(layer)
    if not trivial:
        _check_g_idx_range(layer)
    _set_buffer(layer, "_autogptq_g_idx", None if trivial else layer.g_idx)


def _autogptq_forward(layer: "QuantLinear", x: torch.Tensor) -> torch.Tensor:
    return torch.ops.gptq.autogptq_gemm(x.to(layer.scales.dtype), layer.qweight, layer.qzeros, layer.scales,
                                        layer._autogptq_g_idx, layer.bits, layer.group_size, _format_id(layer))


# ---- exllamav2: act-order as a row permutation made at load ---------------------------------------------
def _exllamav2_unsupported(layer: "QuantLinear", device: torch.device) -> str | None:
    why = _cuda_reason(layer, device, "autogptq_gemm")
    if why is not None:
        return why
    return _uniform_groups_reason(layer)


def _uniform_groups_reason(layer: "QuantLinear") -> str | None:
    """Sorting rows by g_idx yields contiguous groups of group_size rows (what GPTQ's desc_act writes)."""
    if _trivial_g_idx(layer):
        return None
    K, g = layer.in_features, layer.group_size
    sorted_g = torch.sort(layer.g_idx.to(torch.int64)).values
    ar = torch.arange(K, device=sorted_g.device)
    expected = ar // g if g != -1 else torch.zeros_like(ar)
    if not torch.equal(sorted_g, expected):
        return "its g_idx does not give every group exactly group_size channels, so rows cannot be sorted into contiguous groups"
    return None


def _exllamav2_prepare(layer: "QuantLinear") -> None:
    if _trivial_g_idx(layer):
        _set_buffer(layer, "_exllamav2_qweight", layer.qweight)
        _set_buffer(layer, "_exllamav2_perm", None)
        return
    qweight_sorted, perm = torch.ops.gptq.exllamav2_prepare(layer.qweight, layer.g_idx, layer.bits, layer.group_size)
    _set_buffer(layer, "_exllamav2_qweight", qweight_sorted)
    _set_buffer(layer, "_exllamav2_perm", perm)


def _exllamav2_forward(layer: "QuantLinear", x: torch.Tensor) -> torch.Tensor:
    return torch.ops.gptq.exllamav2_gemm(x.to(layer.scales.dtype), layer._exllamav2_qweight, layer.qzeros,
                                         layer.scales, layer._exllamav2_perm, layer.bits, layer.group_size,
                                         _format_id(layer))


# ---- cutlass: exllamav2 plus a copy of the weights in CUTLASS's layout for large batches (Hopper) -------
def _cutlass_unsupported(layer: "QuantLinear", device: torch.device) -> str | None:
    why = _exllamav2_unsupported(layer, device)
    if why is not None:
        return why
    if not _has_kernel("cutlass_gemm"):
        return "this build of gptq has no CUTLASS GEMM (built without the CUTLASS headers, or for no sm_90a)"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) != (9, 0):
        return f"needs compute capability 9.0 (CUTLASS's Hopper GEMM), the GPU is sm_{major}{minor}"
    if layer.bits != 4:
        return f"takes 4-bit weights, the layer has {layer.bits}"
    K, N, g = layer.in_features, layer.out_features, layer.group_size
    if K % 64 or N % 16:
        return f"needs in_features a multiple of 64 and out_features of 16, the layer has {K} x {N}"
    if g != -1 and (g % 64 or K % g):
        return f"needs group_size -1 or a multiple of 64 dividing in_features, the layer has {g}"
    return None


def _cutlass_prepare(layer: "QuantLinear") -> None:
    _exllamav2_prepare(layer)
    w, z = torch.ops.gptq.cutlass_prepare(layer._exllamav2_qweight, layer.qzeros, layer.scales, layer.bits,
                                          layer.group_size, _format_id(layer))
    _set_buffer(layer, "_cutlass_weights", w)
    _set_buffer(layer, "_cutlass_zeros", z)


def _cutlass_forward(layer: "QuantLinear", x: torch.Tensor) -> torch.Tensor:
    return torch.ops.gptq.cutlass_gemm(x.to(layer.scales.dtype), layer._exllamav2_qweight, layer.qzeros,
                                       layer.scales, layer._exllamav2_perm, layer._cutlass_weights,
                                       layer._cutlass_zeros, layer.bits, layer.group_size, _format_id(layer))


# ---- marlin: tensor-core kernel of the marlin helper's ops (gptq::marlin_repack / marlin_gemm) ------
def _marlin_unsupported(layer: "QuantLinear", device: torch.device) -> str | None:
    why = _cuda_reason(layer, device, "marlin_gemm")
    if why is not None:
        return why
    if layer.bits not in (4, 8):
        return f"takes 4 or 8 bits, the layer has {layer.bits}"
    g = layer.group_size
    if not (g in (-1, 32, 64) or (g > 0 and g % 128 == 0)):
        return f"takes group_size -1, 32, 64 or a multiple of 128, the layer has {g}"
    return _uniform_groups_reason(layer)


def _marlin_prepare(layer: "QuantLinear") -> None:
    gi = None if _trivial_g_idx(layer) else layer.g_idx
    qw, sc, zp, perm = torch.ops.gptq.marlin_repack(layer.qweight, layer.qzeros, layer.scales, gi, layer.bits,
                                                    layer.group_size, _format_id(layer))
    # Load-time facts the kernel can use: symmetric zeros need no zero loads, no act-order no gather.
    symmetric = bool((zp == 2 ** (layer.bits - 1)).all()) if zp.numel() else True
    _set_buffer(layer, "_marlin_qweight", qw)
    _set_buffer(layer, "_marlin_scales", sc)
    _set_buffer(layer, "_marlin_zeros", None if symmetric else zp)
    _set_buffer(layer, "_marlin_perm", None if gi is None else perm)


def _marlin_forward(layer: "QuantLinear", x: torch.Tensor) -> torch.Tensor:
    return torch.ops.gptq.marlin_gemm(x.to(layer.scales.dtype), layer._marlin_qweight, layer._marlin_scales,
                                      layer._marlin_zeros, layer._marlin_perm, layer.bits, layer.group_size,
                                      layer.out_features, 0)


BACKENDS: dict[str, Backend] = {
    "exllamav2": Backend("exllamav2", _exllamav2_unsupported, _exllamav2_prepare, _exllamav2_forward),
    "autogptq": Backend("autogptq", _autogptq_unsupported, _autogptq_prepare, _autogptq_forward),
    "torch": Backend("torch", _torch_unsupported, _torch_prepare, _torch_forward, trainable=True),
    "cutlass": Backend("cutlass", _cutlass_unsupported, _cutlass_prepare, _cutlass_forward),
}
if _has_kernel("marlin_gemm", "Meta"):  # this build has the marlin helper's ops
    BACKENDS["marlin"] = Backend("marlin", _marlin_unsupported, _marlin_prepare, _marlin_forward)

# AutoGPTQ's and GPTQModel's names for kernels, mapped to ours.
ALIASES: dict[str, str] = {
    "cpu": "torch",
    "pytorch": "torch",
    "cuda": "autogptq",       # AutoGPTQ qlinear_cuda: any bits, act-order, checkpoint layout
    "cuda-old": "autogptq",   # AutoGPTQ qlinear_cuda_old
    "cuda_old": "autogptq",
    "triton": "autogptq",     # AutoGPTQ/GPTQModel triton: 2/4/8-bit, checkpoint layout
    "tritonv2": "autogptq",
    "exllama": "exllamav2",   # ExLlama v1 and v2: act-order by row sort at load
    "exllama_v2": "exllamav2",
}


if "marlin" not in BACKENDS:
    ALIASES["marlin"] = "exllamav2"  # AutoGPTQ's fast 4-bit kernel name -> our fastest 4-bit kernel


def available_backends() -> list[str]:
    return list(BACKENDS)


def _auto_order(layer: "QuantLinear") -> list[Backend]:
    """Preference for backend="auto", from benchmarks/results (2026-11-22_h100_final5_bench_kernels.txt;
    H100, fp16, 4-bit g128): exllamav2 first (its half2 GEMV beats autogptq's fp32 one at m = 1 on
    every shape, e.g. 45.3 vs 60.1 us on 8192x28672; its tensor-core GEMMs take m = 4..16 at 58 vs
    357 us there at m = 16, faster than Marlin's 84 us, and on Hopper m = 64 at 74 vs 371 us; and it
    sorts act-order rows at load instead of reading g_idx per channel), then
    autogptq (the same GEMV for other widths, dtypes and m, and any g_idx), then torch. marlin, when
    this build has it, is used only when asked for by name: its layout replaces the checkpoint's, so a
    layer cannot switch per call between it and the GEMV that is faster at m = 1. cutlass, also only by
    name: it keeps a second copy of the weights (as much memory again as qweight) to run large batches
    without converting them at every call."""
    order = [n for n in ("exllamav2", "autogptq", "torch") if n in BACKENDS]
    order += [n for n in BACKENDS if n not in order and n not in ("marlin", "cutlass")]
    return [BACKENDS[n] for n in order]


def select_backend(layer: "QuantLinear", backend: str, device: torch.device, trainable: bool = False) -> Backend:
    """The backend for `layer` on `device`: the first usable one in preference order for "auto"
    (or "auto_trainable"), else the named one, which must be usable."""
    name = ALIASES.get(backend, backend)
    if name in ("auto", "auto_trainable"):
        trainable = trainable or name == "auto_trainable"
        reasons = []
        for b in _auto_order(layer):
            if trainable and not b.trainable:
                reasons.append(f"{b.name}: not trainable")
                continue
            why = b.unsupported_reason(layer, device)
            if why is None:
                return b
            reasons.append(f"{b.name}: {why}")
        raise RuntimeError(f"QuantLinear({layer.describe()}): no usable backend on {device}: " + "; ".join(reasons))
    if name not in BACKENDS:
        raise ValueError(
            f"QuantLinear: backend must be 'auto', 'auto_trainable', one of {sorted(BACKENDS)} or an alias "
            f"{sorted(ALIASES)}, got {backend!r}")
    b = BACKENDS[name]
    why = b.unsupported_reason(layer, device)
    if why is not None:
        raise ValueError(f"QuantLinear({layer.describe()}): backend {name!r} cannot run on {device}: {why}")
    if trainable and not b.trainable:
        raise ValueError(f"QuantLinear({layer.describe()}): backend {name!r} does not support training")
    return b


def post_init_model(model: torch.nn.Module, backend: str = "auto", trainable: bool = False) -> str:
    """Chooses and prepares the backend of every QuantLinear in `model` (after its weights are loaded and
    it sits on its final device), and logs one summary line, which it also returns, e.g.
    "gptq: 224 QuantLinear layers -> exllamav2 (4-bit g128 act-order, sm_90)"."""
    from .qlinear import QuantLinear

    kinds: Counter = Counter()
    total = 0
    for module in model.modules():
        if isinstance(module, QuantLinear):
            module.post_init(backend=backend, trainable=trainable)
            dev = module.qweight.device
            arch = "cpu"
            if dev.type == "cuda":
                major, minor = torch.cuda.get_device_capability(dev)
                arch = f"sm_{major}{minor}"
            g = "g-1" if module.group_size == -1 else f"g{module.group_size}"
            act = " act-order" if module.desc_act and not _trivial_g_idx(module) else ""
            kinds[(module.backend.name, f"{module.bits}-bit {g}{act}, {arch}")] += 1
            total += 1
    if total == 0:
        line = "gptq: no QuantLinear layers in the model"
    elif len(kinds) == 1:
        (name, desc), = kinds
        line = f"gptq: {total} QuantLinear layers -> {name} ({desc})"
    else:
        parts = ", ".join(f"{n} x{c} ({d})" for (n, d), c in kinds.most_common())
        line = f"gptq: {total} QuantLinear layers -> {parts}"
    logger.info(line)
    return line
