"""The GEMM ops (torch.ops.gptq.autogptq_gemm, exllamav2_prepare/exllamav2_gemm) against a float64
reference: y = x W^T with W[n, k] = s[g, n] (q[k, n] - z[g, n]), g = g_idx[k], computed in float64
from the integer codes.

Tolerances: the kernels accumulate in fp32 and round y once to the output dtype, so the error is
dominated by that rounding and by x itself being fp16/bf16 (x is the same in the reference):
2e-3 for fp16 (2^-11 relative rounding, with margin for fp32 accumulation over K up to 28672) and
1e-2 for bf16 (2^-8). On the CPU the reference path is fp32 throughout: 1e-5.
Outputs are "poisoned": the caching allocator's free memory is filled with NaN before each call,
so an element the kernel forgets to write shows up as NaN.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import gptq  # noqa: F401  (registers torch.ops.gptq)
from conftest import rel_error

FMT = {"gptq": 1, "gptq_v2": 2}
TOL = {torch.float16: 2e-3, torch.bfloat16: 1e-2, torch.float32: 1e-5}


def make_layer(bits, K, N, group_size, act_order=False, fmt="gptq", dtype=torch.float16, device="cpu", seed=0):
    """Random codes, zeros and scales, packed with the (separately tested) packing ops; returns the
    op arguments and the float64 reference weight W [N, K]."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    G = 1 if group_size == -1 else -(-K // group_size)
    q = torch.randint(0, 2**bits, (K, N), dtype=torch.int32, generator=gen)
    z = torch.randint(0, 2**bits, (G, N), dtype=torch.int32, generator=gen)
    s = (torch.rand(G, N, generator=gen) * 0.02 + 1e-3).to(dtype)
    g_idx = torch.arange(K, dtype=torch.int32) // group_size if group_size != -1 else torch.zeros(K, dtype=torch.int32)
    if act_order:
        g_idx = g_idx[torch.randperm(K, generator=gen)]
    stored_z = (z - 1) % 2**bits if fmt == "gptq" else z
    qweight = torch.ops.gptq.pack_rows(q, bits)
    qzeros = torch.ops.gptq.pack_cols(stored_z, bits)
    dev = torch.device(device)
    gl = g_idx.long().to(dev)
    W = (s.to(dev).double()[gl] * (q.to(dev).double() - z.to(dev).double()[gl])).t()
    return dict(qweight=qweight.to(dev), qzeros=qzeros.to(dev), scales=s.to(dev), g_idx=g_idx.to(dev),
                bits=bits, group_size=group_size, fmt=FMT[fmt]), W


def poison_cuda_allocator():
    free = torch.empty(1 << 27, dtype=torch.float32, device="cuda")  # 512 MiB of NaN, then released
    free.fill_(float("nan"))
    del free


def run_autogptq(L, x, pass_g_idx):
    return torch.ops.gptq.autogptq_gemm(x, L["qweight"], L["qzeros"], L["scales"], L["g_idx"] if pass_g_idx else None,
                                        L["bits"], L["group_size"], L["fmt"])


# ---- CPU (runs in CI) -------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("act_order", [False, True])
def test_cpu_autogptq_gemm_matches_float64(bits, act_order):
    L, W = make_layer(bits, 256, 96, 64, act_order=act_order, dtype=torch.float32, seed=bits)
    x = torch.randn(5, 256)
    y = run_autogptq(L, x, pass_g_idx=True)
    assert y.shape == (5, 96) and y.dtype == torch.float32
    assert rel_error(y, x.double() @ W.t()) < TOL[torch.float32]


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("m", [1, 16, 17])
@pytest.mark.parametrize("group_size,fmt", [(-1, "gptq"), (32, "gptq_v2"), (64, "gptq")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cpu_gemm_fused_gemv_and_dequantize_paths_match_float64(bits, m, group_size, fmt, dtype):
    # m <= 16 runs the CPU's fused GEMV (column strips of 256, W never materialized), m = 17 dequantize
    # + one fp32 GEMM. N = 288 leaves a 32-column strip; K = 320 is 10 packing periods of 3 bits.
    L, W = make_layer(bits, 320, 288, group_size, fmt=fmt, dtype=dtype, seed=bits * 7 + m)
    x = torch.randn(m, 320).to(dtype)
    y = run_autogptq(L, x, pass_g_idx=False)
    assert y.shape == (m, 288) and y.dtype == dtype
    assert rel_error(y, x.double() @ W.t()) < TOL[dtype]


@pytest.mark.parametrize("bits", [3, 4])
def test_cpu_exllamav2_sort_then_gather_matches_float64(bits):
    L, W = make_layer(bits, 384, 64, 128, act_order=True, fmt="gptq_v2", dtype=torch.float32, seed=7)
    qs, perm = torch.ops.gptq.exllamav2_prepare(L["qweight"], L["g_idx"], bits, 128)
    assert perm.dtype == torch.int32 and sorted(perm.tolist()) == list(range(384))
    # After the sort, the groups are contiguous: g_idx[perm] is k // group_size.
    assert torch.equal(L["g_idx"][perm.long()], torch.arange(384, dtype=torch.int32) // 128)
    x = torch.randn(3, 384)
    y = torch.ops.gptq.exllamav2_gemm(x, qs, L["qzeros"], L["scales"], perm, bits, 128, L["fmt"])
    assert rel_error(y, x.double() @ W.t()) < TOL[torch.float32]


def test_exllamav2_prepare_refuses_uneven_groups():
    L, _ = make_layer(4, 256, 32, 64, dtype=torch.float32)
    g = L["g_idx"].clone()
    g[0] = 3  # group 3 now has 65 channels, group 0 has 63
    with pytest.raises(RuntimeError, match="exllamav2_prepare: after sorting, g_idx must give every group"):
        torch.ops.gptq.exllamav2_prepare(L["qweight"], g, 4, 64)


def test_gemm_bad_inputs_name_op_and_rule():
    L, _ = make_layer(4, 128, 32, 32, dtype=torch.float32)
    with pytest.raises(RuntimeError, match="autogptq_gemm: x has 64 features but the layer has K = 128"):
        run_autogptq(L, torch.randn(2, 64), True)
    with pytest.raises(RuntimeError, match="autogptq_gemm: x must have the scales' dtype"):
        run_autogptq(L, torch.randn(2, 128, dtype=torch.float64), True)
    with pytest.raises(RuntimeError, match="autogptq_gemm: x must be 2-D"):
        run_autogptq(L, torch.randn(2, 2, 128), True)


def test_meta_shapes_for_torch_compile():
    L, _ = make_layer(4, 128, 32, 32, dtype=torch.float16)
    meta = {k: (v.to("meta") if isinstance(v, torch.Tensor) else v) for k, v in L.items()}
    y = run_autogptq(meta, torch.empty(7, 128, dtype=torch.float16, device="meta"), True)
    assert y.shape == (7, 32) and y.dtype == torch.float16 and y.device.type == "meta"


# ---- CUDA -------------------------------------------------------------------------------------------
REAL_SHAPES = [(4096, 4096), (4096, 11008), (11008, 4096), (8192, 28672), (28672, 8192)]


def check_cuda(bits, K, N, group_size, m, act_order, dtype=torch.float16, fmt="gptq", pass_g_idx=None, seed=0):
    L, W = make_layer(bits, K, N, group_size, act_order=act_order, fmt=fmt, dtype=dtype, device="cuda", seed=seed)
    x = torch.randn(m, K, device="cuda").to(dtype)
    ref = x.double() @ W.t()
    poison_cuda_allocator()
    y = run_autogptq(L, x, act_order if pass_g_idx is None else pass_g_idx)
    torch.cuda.synchronize()
    assert y.shape == (m, N) and y.dtype == dtype
    assert not torch.isnan(y).any(), "an output element was not written"
    err = rel_error(y, ref)
    assert err < TOL[dtype], f"bits={bits} K={K} N={N} g={group_size} m={m} act_order={act_order}: {err:.2e}"
    return L, W, x, ref


@pytest.mark.gpu
@pytest.mark.parametrize("K,N", REAL_SHAPES)
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_cuda_autogptq_real_shapes_m1(K, N, bits):
    check_cuda(bits, K, N, 128, 1, act_order=False, seed=K + N + bits)


@pytest.mark.gpu
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("m", [1, 3, 17, 64])
@pytest.mark.parametrize("group_size", [32, 128, -1])
@pytest.mark.parametrize("act_order", [False, True])
def test_cuda_autogptq_bits_groups_m_act_order(bits, m, group_size, act_order):
    if act_order and group_size == -1:
        pytest.skip("one group: act-order changes nothing")
    check_cuda(bits, 4096, 4096 if m < 64 else 1024, group_size, m, act_order, seed=bits * 100 + m)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fmt", ["gptq", "gptq_v2"])
@pytest.mark.parametrize("m", [1, 4, 16])
def test_cuda_autogptq_dtypes_and_formats(dtype, fmt, m):
    check_cuda(4, 11008, 4096, 128, m, act_order=(m == 4), dtype=dtype, fmt=fmt)
    check_cuda(3, 4096, 11008, 128, m, act_order=False, dtype=dtype, fmt=fmt)


@pytest.mark.gpu
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_cuda_autogptq_odd_group_counts_and_ragged_shapes(bits):
    # K = 4160 = 32 * 130, N = 544 (not a multiple of the kernel's 128-column block). Group 96 gives
    # 44 groups, the last one short; group 40 divides no packing period of 2 or 3 bits, so the
    # kernel decodes groups per input channel.
    for g in (96, 40):
        check_cuda(bits, 4160, 544, g, 3, act_order=False, seed=g + bits)
    check_cuda(bits, 4160, 544, 96, 1, act_order=True, seed=bits)


@pytest.mark.gpu
@pytest.mark.parametrize("K,N", [(4096, 4096), (8192, 28672)])
def test_cuda_large_m_uses_cublas_path(K, N):
    # The AutoGPTQ-style op above 16 rows: dequantize, then cuBLAS.
    check_cuda(4, K, N, 128, 4096 if K == 4096 else 2048, act_order=False)


@pytest.mark.gpu
@pytest.mark.parametrize("bits", [3, 4, 8])
@pytest.mark.parametrize("m", [1, 5, 64])
def test_cuda_exllamav2_act_order(bits, m):
    L, W = make_layer(bits, 4096, 4096, 128, act_order=True, device="cuda", seed=bits + m)
    qs, perm = torch.ops.gptq.exllamav2_prepare(L["qweight"], L["g_idx"], bits, 128)
    x = torch.randn(m, 4096, device="cuda").half()
    poison_cuda_allocator()
    y = torch.ops.gptq.exllamav2_gemm(x, qs, L["qzeros"], L["scales"], perm, bits, 128, L["fmt"])
    assert not torch.isnan(y).any()
    assert rel_error(y, x.double() @ W.t()) < TOL[torch.float16]


@pytest.mark.gpu
def test_cuda_graph_capture_replays_the_same_output():
    L, W = make_layer(4, 4096, 4096, 128, device="cuda")
    x = torch.randn(1, 4096, device="cuda").half()
    run_autogptq(L, x, False)  # warm up outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = run_autogptq(L, x, False)
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.cuda.synchronize()
    assert rel_error(y, x.double() @ W.t()) < TOL[torch.float16]


def run_exllamav2(L, x, act_order):
    if act_order:
        qs, perm = torch.ops.gptq.exllamav2_prepare(L["qweight"], L["g_idx"], L["bits"], L["group_size"])
    else:
        qs, perm = L["qweight"], None
    poison_cuda_allocator()
    return torch.ops.gptq.exllamav2_gemm(x, qs, L["qzeros"], L["scales"], perm, L["bits"], L["group_size"], L["fmt"])


def check_exllamav2_outliers(K, N, group_size, m, dtype=torch.float16, act_order=False, fmt="gptq", seed=0, every=97,
                            run=None):
    """One 4-bit exllamav2 call (or `run(L, x, act_order)`, e.g. run_cutlass_copy) against float64 on x
    with outlier channels (every `every`-th channel 2000 sigma, as in real LLM activations: no fp16
    overflow in partial sums): finite, the op's tolerance for `dtype`."""
    L, W = make_layer(4, K, N, group_size, act_order=act_order, fmt=fmt, dtype=dtype, device="cuda", seed=seed)
    x = torch.randn(m, K, device="cuda")
    x[:, ::every] *= 2000
    x = x.to(dtype)
    y = (run or run_exllamav2)(L, x, act_order)
    err = rel_error(y, x.double() @ W.t())
    assert y.dtype == dtype and torch.isfinite(y).all() and err < TOL[dtype], (K, N, group_size, fmt, act_order,
                                                                                 dtype, m, err)


@pytest.mark.gpu
@pytest.mark.parametrize("K,N", REAL_SHAPES)
@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("m", [1, 3, 16])
def test_cuda_exllamav2_half2_path_real_shapes(K, N, act_order, m):
    # fp16, 4 bits: m = 1 runs the half2 GEMV (products rounded to fp16, sums in fp32), m = 3 the
    # tensor-core GEMV (weights (q - z) s rounded once to fp16, fp32 accumulation), m = 16 the
    # tensor-core GEMM (exact integer weights q - z from registers) or on the H100 the Hopper GEMM.
    L, W = make_layer(4, K, N, 128, act_order=act_order, device="cuda", seed=K - N + m)
    x = torch.randn(m, K, device="cuda").half()
    y = run_exllamav2(L, x, act_order)
    assert not torch.isnan(y).any()
    assert rel_error(y, x.double() @ W.t()) < TOL[torch.float16]


@pytest.mark.gpu
@pytest.mark.parametrize("group_size", [32, 64, 256, -1])
@pytest.mark.parametrize("fmt", ["gptq", "gptq_v2"])
@pytest.mark.parametrize("m", [1, 2, 4, 5, 16])
def test_cuda_exllamav2_half2_path_groups_formats_and_large_activations(group_size, fmt, m):
    # The tensor-core GEMM (m >= 5) stages 256 channels at a time: groups of 32 and 64 end inside a
    # stage, 256 fills one, -1 spans them all.
    check_exllamav2_outliers(4096, 1056, group_size, m, fmt=fmt, seed=3 + m)


@pytest.mark.gpu
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 9, 16])
@pytest.mark.parametrize("K,N,group_size", [(4104, 1056, -1), (2080, 8, 32), (64, 4096, 64), (8, 16, -1), (4160, 136, 64),
                                           (4160, 264, 512)])
def test_cuda_exllamav2_half2_path_ragged_k_and_narrow_n(m, K, N, group_size):
    # K/8 not a multiple of the 8-row batch (4104 -> 513 packed rows), a group of 32 (4-row batches),
    # one 8-column strip, one packed row: the tails of every loop. 4160 x 264 with groups of 512: a
    # group across two 256-channel stages, a last group of 64 channels, a second 256-column block with
    # 8 columns.
    L, W = make_layer(4, K, N, group_size, device="cuda", seed=K + N + m)
    x = torch.randn(m, K, device="cuda").half()
    y = run_exllamav2(L, x, False)
    assert torch.isfinite(y).all()
    assert rel_error(y, x.double() @ W.t()) < TOL[torch.float16]


@pytest.mark.gpu
@pytest.mark.parametrize("m", [9, 16, 17, 33, 64, 100, 129, 300, 1024])
@pytest.mark.parametrize("K,N", [(4096, 4096), (11008, 4096), (4096, 11008)])
def test_cuda_exllamav2_large_m_real_shapes(m, K, N):
    # On the H100 the warpgroup-MMA GEMM runs m = 4..1024 (4..64 on 4096x4096): fp16 weights (q - z) s
    # from registers, fp32 accumulation, 16, 32, 64 or 128 tokens a block, one or several token tiles, a
    # partial last tile; above, dequantize + cuBLAS; elsewhere the tensor-core GEMM up to m = 16. Same
    # tolerance.
    L, W = make_layer(4, K, N, 128, device="cuda", seed=K + 3 * N + m)
    x = torch.randn(m, K, device="cuda").half()
    y = run_exllamav2(L, x, False)
    assert not torch.isnan(y).any()
    assert rel_error(y, x.double() @ W.t()) < TOL[torch.float16]


@pytest.mark.gpu
@pytest.mark.parametrize("m", [64, 256])
@pytest.mark.parametrize("K,N", [(8192, 28672), (28672, 8192)])
def test_cuda_exllamav2_large_m_largest_shapes(m, K, N):
    L, W = make_layer(4, K, N, 128, device="cuda", seed=K + m)
    x = torch.randn(m, K, device="cuda").half()
    y = run_exllamav2(L, x, False)
    assert not torch.isnan(y).any()
    assert rel_error(y, x.double() @ W.t()) < TOL[torch.float16]


@pytest.mark.gpu
@pytest.mark.parametrize("m", [17, 64, 200])
@pytest.mark.parametrize("group_size", [32, 64, 256, -1])
@pytest.mark.parametrize("fmt", ["gptq", "gptq_v2"])
@pytest.mark.parametrize("act_order", [False, True])
def test_cuda_exllamav2_large_m_groups_formats_act_order(m, group_size, fmt, act_order):
    # 128-channel stages: groups of 32 and 64 end inside a stage, 256 spans two, -1 all; v1 zero
    # points (stored z - 1); act-order rows sorted at load; 2000-sigma outlier channels.
    # 4096 x 4352: large enough that m = 200 takes the warpgroup-MMA GEMM on the H100.
    check_exllamav2_outliers(4096, 4352, group_size, m, act_order=act_order and group_size != -1, fmt=fmt,
                             seed=7 + m + group_size)


@pytest.mark.gpu
@pytest.mark.parametrize("m", [1, 2, 3, 4, 16, 64, 200])
@pytest.mark.parametrize("group_size,fmt,act_order", [(128, "gptq", False), (32, "gptq_v2", True), (-1, "gptq", False)])
def test_cuda_exllamav2_bf16(m, group_size, fmt, act_order):
    # bf16 activations and scales: m = 1..4 the tensor-core GEMV, on the H100 from m = 9 the
    # warpgroup-MMA GEMM, both decoding bf16 weights (q - z) s (the bf16 tolerance: 2^-8 rounding of x,
    # the weights and y); elsewhere the AutoGPTQ-style kernel.
    # 2000-sigma outlier channels as in the fp16 tests.
    check_exllamav2_outliers(4096, 4352, group_size, m, torch.bfloat16, act_order, fmt, seed=5 + m + group_size)


def run_in_subprocess(body, env):
    """Runs `body` (Python that ends by printing "ok") in a fresh interpreter with `env` added to the
    environment: the kernels read their tuning variables once per process. The body sees torch, gptq,
    rel_error, make_layer, run_exllamav2, check_exllamav2_outliers, check_autogptq_outliers,
    check_tc_gemv_cases and TOL."""
    import os
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    header = (f"import sys, torch\nsys.path.insert(0, {here!r})\nimport gptq\nfrom conftest import rel_error\n"
              "from test_kernel_gemm import TOL, check_autogptq_outliers, check_exllamav2_outliers, "
              "check_tc_gemv_cases, make_layer, run_exllamav2\n")
    r = subprocess.run([sys.executable, "-c", header + body], capture_output=True, text=True,
                       env={**os.environ, **env}, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr


_NARROW_GEMV_CHECK = """
import os
dtype = torch.bfloat16 if os.environ.get("GPTQ_EXLLAMAV2_TCGEMV_MIN_M") == "99" else torch.float16
cases = [(4096, 4096, 128, "gptq", False), (4096, 11008, 128, "gptq", True), (11008, 4096, 32, "gptq_v2", False),
         (8192, 8192, 64, "gptq", False), (8192, 28672, 128, "gptq", False), (28672, 8192, 128, "gptq", False),
         (4160, 4352, 128, "gptq", False), (4160, 40, -1, "gptq_v2", False), (32, 72, 32, "gptq", False),
         (4096, 96, 256, "gptq", True)]
for K, N, group_size, fmt, act_order in cases:
    check_exllamav2_outliers(K, N, group_size, 1, dtype, act_order, fmt, seed=K + N)
print("ok")
"""


@pytest.mark.gpu
@pytest.mark.parametrize("config", ["128x8s1", "64x8", "32x8", "32x8s1", "16x8", "16x4s1", "32x4"])
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_cuda_exllamav2_gemv_column_strip_widths(config, dtype):
    # The m = 1 GEMV (exllamav2_kernel.cu) in each of its block widths, 128, 64, 32 and 16 columns (32,
    # 16, 8 or 4 lanes a packed row) and batches of 8 or 4 rows, forced through
    # GPTQ_EXLLAMAV2_GEMV_CONFIG (read once per process, hence the subprocess), with K split as
    # planned or not at all ("s1"); bf16 with the tensor-core GEMV (its m = 1 kernel) off. Real
    # shapes, K = 4160 (a last group of 64 channels), N = 40, 72 and 96 (strips past N), groups 32 to
    # 256 and -1, v1 and v2 zeros, act-order; 2000-sigma outlier channels. The tolerance is the op's.
    env = {"GPTQ_EXLLAMAV2_GEMV_CONFIG": config}
    if dtype == "bf16":
        env["GPTQ_EXLLAMAV2_TCGEMV_MIN_M"] = "99"
    run_in_subprocess(_NARROW_GEMV_CHECK, env)


_BF16_GEMV_CHECK = """
for m in (2, 3, 4):
    for group_size, fmt, act_order in ((128, "gptq", False), (32, "gptq_v2", True), (-1, "gptq", False)):
        check_exllamav2_outliers(4160, 4352, group_size, m, torch.bfloat16, act_order, fmt, seed=m + group_size)
print("ok")
"""


@pytest.mark.gpu
def test_cuda_exllamav2_bf16_gemv_at_m_2_to_4():
    # bf16 takes the tensor-core GEMV at m = 1..8 and, on Hopper, the Hopper GEMM from m = 9;
    # GPTQ_EXLLAMAV2_TCGEMV_MIN_M=99 and GPTQ_EXLLAMAV2_WGMMA_MIN_M=5 (read once per process, hence the
    # subprocess) hand the bf16 GEMV m = 2..4. K = 4160 ends with a
    # group of 64 channels at group size 128; 1e-2 as for every bf16 result.
    run_in_subprocess(_BF16_GEMV_CHECK, {"GPTQ_EXLLAMAV2_WGMMA_MIN_M": "5", "GPTQ_EXLLAMAV2_TCGEMV_MIN_M": "99"})


_BLOCKS_PER_SM_CHECK = """
for K, N, group_size, dtype in ((4096, 4096, 128, torch.float16), (11008, 4096, 32, torch.float16),
                                (4104, 4352, -1, torch.float16), (8192, 8192, 128, torch.bfloat16)):
    for m in (5, 16):
        check_exllamav2_outliers(K, N, group_size, m, dtype, seed=K + N + m, every=89)
print("ok")
"""


@pytest.mark.gpu
@pytest.mark.parametrize("blocks", ["1", "2"])
def test_cuda_exllamav2_hopper_gemm_one_and_two_blocks_an_sm(blocks):
    # At 16 tokens a block the Hopper GEMM's plan picks one block an SM (a 9-stage pipeline) or two (4
    # stages each) by shape; GPTQ_EXLLAMAV2_WGMMA_BLOCKS_PER_SM (read once per process, hence the
    # subprocess) forces either on shapes where the plan picks the other: 4096x4096 and 11008x4096
    # (one), 8192x8192 (two), and 4104x4352 (K ends with a partial stage). 2000-sigma outlier channels,
    # m = 5 and 16 (a partial and a full token tile); the op's tolerances. Off Hopper the variable is
    # unused and the cases test the other paths.
    run_in_subprocess(_BLOCKS_PER_SM_CHECK, {"GPTQ_EXLLAMAV2_WGMMA_BLOCKS_PER_SM": blocks})


_TCGEMV_CHECK = """
import itertools
cases = [
    # real shapes, group 128, v1 zero points, act-order on one
    (4096, 4096, 128, "gptq", False), (11008, 4096, 128, "gptq", True), (4096, 11008, 128, "gptq_v2", False),
    # groups of 32 (4-row batches) and 64, one group, a group across batches (512)
    (4096, 1056, 32, "gptq_v2", True), (4096, 1056, 64, "gptq", False), (4096, 1056, -1, "gptq", False),
    # K/8 not a multiple of the batch (513 packed rows), one packed row, narrow and ragged N
    (4104, 1056, -1, "gptq_v2", False), (8, 16, -1, "gptq", False), (2080, 8, 32, "gptq", False),
    (4160, 264, 512, "gptq_v2", False), (64, 4096, 64, "gptq", False),
]
for (K, N, group_size, fmt, act_order), dtype in itertools.product(cases, (torch.float16, torch.bfloat16)):
    for m in (1, 2, 3, 5, 8, 9, 16):
        check_exllamav2_outliers(K, N, group_size, m, dtype, act_order, fmt, seed=K + N + m)
print("ok")
"""


@pytest.mark.gpu
@pytest.mark.parametrize("config", ["default", "2x2x2", "2x2x2s", "2x1x2", "2x1x2s", "2x2x1", "2x1x1s"])
def test_cuda_exllamav2_tensor_core_gemv(config):
    # The tensor-core GEMV (exllamav2_tcgemv.cu) for m = 1..16 (the op takes it at m = 2..8, bf16 from
    # m = 1), forced on through GPTQ_EXLLAMAV2_TCGEMV_MIN_M / _MAX_M, in the default variants (x in
    # registers up to 8 tokens, in shared-memory slots above) and each other J x WC x R[s]
    # (GPTQ_EXLLAMAV2_TCGEMV_CONFIG; read once per process, hence the subprocess). fp16 weights
    # (q - z) s rounded once (2^-11) or bf16 (2^-9), fp32 accumulation: the op's tolerances. m = 8 / 9
    # is the edge of one and two token tiles; 2000-sigma outlier channels.
    env = {"GPTQ_EXLLAMAV2_TCGEMV_MIN_M": "1", "GPTQ_EXLLAMAV2_TCGEMV_MAX_M": "16"}
    if config != "default":
        env["GPTQ_EXLLAMAV2_TCGEMV_CONFIG"] = config
    run_in_subprocess(_TCGEMV_CHECK, env)


_WITHOUT_TCGEMV_CHECK = """
for K, N, group_size, fmt, act_order in ((4096, 4096, 128, "gptq", False), (4104, 1056, -1, "gptq_v2", False),
                                         (2080, 8, 32, "gptq", True), (11008, 4096, 64, "gptq_v2", True)):
    for dtype in (torch.float16, torch.bfloat16):
        for m in (1, 2, 3, 4, 5, 8):
            check_exllamav2_outliers(K, N, group_size, m, dtype, act_order, fmt, seed=K + N + m)
print("ok")
"""


@pytest.mark.gpu
def test_cuda_exllamav2_m_2_to_8_without_tensor_core_gemv():
    # The kernels the tensor-core GEMV took m = 2..8 from (the half2 GEMV at m = 2..4, the bf16 GEMV at
    # m = 1..4 off Hopper, the tensor-core GEMM and the Hopper GEMM from m = 4 or 5) still serve them
    # with it turned off (a minimum above the maximum; read once per process, hence the subprocess).
    run_in_subprocess(_WITHOUT_TCGEMV_CHECK, {"GPTQ_EXLLAMAV2_TCGEMV_MIN_M": "99"})


@pytest.mark.gpu
@pytest.mark.parametrize("m", [1, 5, 17, 129])
@pytest.mark.parametrize("K,N,group_size", [(4104, 4352, -1), (4160, 264, 512), (64, 4096, 64)])
def test_cuda_exllamav2_bf16_ragged_k_and_narrow_n(m, K, N, group_size):
    L, W = make_layer(4, K, N, group_size, dtype=torch.bfloat16, device="cuda", seed=K + N + m)
    x = torch.randn(m, K, device="cuda").bfloat16()
    y = run_exllamav2(L, x, False)
    assert torch.isfinite(y).all()
    assert rel_error(y, x.double() @ W.t()) < TOL[torch.bfloat16]


@pytest.mark.gpu
@pytest.mark.parametrize("m", [17, 40, 129])
@pytest.mark.parametrize("K,N,group_size", [(4104, 4352, -1), (2080, 8, 32), (64, 4096, 64), (8, 16, -1),
                                           (4160, 264, 512), (4224, 776, 128)])
def test_cuda_exllamav2_large_m_ragged_k_and_narrow_n(m, K, N, group_size):
    # K not a multiple of the 128-channel stage (4104, 2080, 4160, 64, 8), one packed row (K = 8), a
    # block of 256 features with 8 (N = 8, 264) or 8 + 256 (776) of them, a group across stages (512),
    # a last group of 64 channels. On the H100, m = 129 takes the warpgroup-MMA GEMM on 4104 x 4352
    # only (two token tiles of 128); the smaller shapes dequantize + cuBLAS there.
    L, W = make_layer(4, K, N, group_size, device="cuda", seed=K + N + m)
    x = torch.randn(m, K, device="cuda").half()
    y = run_exllamav2(L, x, False)
    assert torch.isfinite(y).all()
    assert rel_error(y, x.double() @ W.t()) < TOL[torch.float16]


@pytest.mark.gpu
@pytest.mark.parametrize("K,N", [(8192, 8192), (4096, 4096)])
@pytest.mark.parametrize("m", [1, 16, 64])
def test_cuda_exllamav2_split_k_repeats_bit_exactly(K, N, m):
    # These shapes split K over several blocks; the last block of each column strip adds the partials
    # in split order and resets its counter, so a second call must give the same bits.
    L, W = make_layer(4, K, N, 128, device="cuda", seed=11)
    x = torch.randn(m, K, device="cuda").half()
    y1 = run_exllamav2(L, x, False)
    y2 = run_exllamav2(L, x, False)
    assert torch.equal(y1, y2)
    assert rel_error(y1, x.double() @ W.t()) < TOL[torch.float16]


@pytest.mark.gpu
def test_cuda_split_k_counters_on_concurrent_streams_and_graphs():
    # The split-K counters are zeroed once per stream and once per captured graph, not per call (every
    # launch leaves them at zero). GEMVs racing on two streams, and two graphs replayed between eager
    # calls on the default stream, must each give the bits of the same call made alone.
    L, W = make_layer(4, 8192, 8192, 128, device="cuda", seed=13)
    xs = [torch.randn(m, 8192, device="cuda").half() for m in (1, 16, 1, 3)]

    def f(x):
        return torch.ops.gptq.exllamav2_gemm(x, L["qweight"], L["qzeros"], L["scales"], None, 4, 128, 1)

    want = [f(x) for x in xs]
    torch.cuda.synchronize()
    s1, s2 = torch.cuda.Stream(), torch.cuda.Stream()
    outs = []
    for _ in range(20):
        with torch.cuda.stream(s1):
            o1 = [f(x) for x in xs]
        with torch.cuda.stream(s2):
            o2 = [f(x) for x in xs]
        outs.append((o1, o2))
    torch.cuda.synchronize()
    for o1, o2 in outs:
        for a, b, w in zip(o1, o2, want):
            assert torch.equal(a, w) and torch.equal(b, w)

    graphs, graph_out = [], []
    for x in xs[:2]:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            graph_out.append(f(x))
        graphs.append(g)
    eager = []
    for _ in range(5):
        for g in graphs:
            g.replay()
        eager.append(f(xs[0]))
    torch.cuda.synchronize()
    assert torch.equal(graph_out[0], want[0]) and torch.equal(graph_out[1], want[1])
    assert all(torch.equal(e, want[0]) for e in eager)
    assert rel_error(want[1], xs[1].double() @ W.t()) < TOL[torch.float16]


def check_autogptq_outliers(K, N, group_size, m, fmt="gptq", seed=0, bits=3):
    """One fp16 autogptq call (no g_idx) against float64 on x with outlier channels (every 97th):
    finite, within the fp16 tolerance. The outliers are 2000 sigma at 2 and 3 bits, 100 at 8 bits, whose
    weights are 30-60x larger (rms |v - z| 104 against 1.6-3.2): with 2000 the exact y of a 4096-wide
    layer reaches the fp16 limit (65504) itself."""
    L, W = make_layer(bits, K, N, group_size, fmt=fmt, device="cuda", seed=seed)
    x = torch.randn(m, K, device="cuda")
    x[:, ::97] *= 2000 if bits < 8 else 100  # outlier channels: no fp16 overflow in the half2 chains
    x = x.half()
    poison_cuda_allocator()
    y = run_autogptq(L, x, False)
    err = rel_error(y, x.double() @ W.t())
    assert torch.isfinite(y).all() and err < TOL[torch.float16], (bits, K, N, group_size, fmt, m, err)


_GEMV3_CHECK = """
for m in (1, 2, 4):
    for group_size in (32, 64, -1):
        for fmt in ("gptq", "gptq_v2"):
            check_autogptq_outliers(4160, 1056, group_size, m, fmt, seed=m + 7)
print("ok")
"""


@pytest.mark.gpu
def test_cuda_autogptq_3bit_half2_gemv_groups_ragged_k_and_large_activations():
    # fp16, 3 bits, m <= 4, no g_idx: the half2 GEMV (autogptq_gemv3.cu), which the op keeps for m = 1;
    # GPTQ_AUTOGPTQ_TCGEMV3_MIN_M=99 (read once per process, hence the subprocess) turns the tensor-core
    # GEMV off so that it serves m = 2 and 4 too. K = 4160 is 130 periods of 32 channels (group 64
    # takes two-period batches, and 4160 / 64 = 65 groups); N = 1056 ends inside a 128-column block and
    # puts the zero points of some lanes across two qzeros words.
    run_in_subprocess(_GEMV3_CHECK, {"GPTQ_AUTOGPTQ_TCGEMV3_MIN_M": "99"})


# The checks of the tensor-core GEMVs (3 bits: autogptq_tcgemv3.cu; 2 and 8: autogptq_tcgemv28.cu),
# each (K, N, group size, format) at m = 1, 2, 3, 5, 8, 9, 16 (8 / 9: the edge of one and two token tiles).
TC_GEMV_CASES = [
    # real shapes, group 128, v1 and v2 zero points
    (4096, 4096, 128, "gptq"), (11008, 4096, 128, "gptq_v2"), (4096, 11008, 128, "gptq"),
    # groups of 32 and 64, one group, a group across batches (512); N = 1056: a last block of 32
    # features (3 bits: zero points across two qzeros words)
    (4096, 1056, 32, "gptq_v2"), (4096, 1056, 64, "gptq"), (4096, 1056, -1, "gptq"), (4096, 1056, 512, "gptq_v2"),
    # K = 4160: a last batch of part of its rows (3 bits: 130 periods, a last batch of 2); K = 32: one
    # 3-bit period, 2 or 8 packed rows at 2 or 8 bits; N = 32: one narrow block
    (4160, 1056, 64, "gptq"), (32, 1056, -1, "gptq_v2"), (4160, 32, 32, "gptq"),
]


def check_tc_gemv_cases(bits_list):
    for bits, (K, N, group_size, fmt), m in itertools.product(bits_list, TC_GEMV_CASES, (1, 2, 3, 5, 8, 9, 16)):
        check_autogptq_outliers(K, N, group_size, m, fmt, seed=K + N + m + bits, bits=bits)


@pytest.mark.gpu
def test_cuda_autogptq_3bit_tensor_core_gemv():
    # The 3-bit tensor-core GEMV (autogptq_tcgemv3.cu) forced on from m = 1 through
    # GPTQ_AUTOGPTQ_TCGEMV3_MIN_M=1 (read once per process, hence the subprocess); the op takes it at
    # m = 2..16. Weights (v - z) s rounded once to fp16 (2^-11), fp32 accumulation: the fp16
    # tolerance. m = 8 / 9 is the edge of one and two token tiles; 2000-sigma outlier channels.
    run_in_subprocess("check_tc_gemv_cases((3,))\nprint(\"ok\")\n", {"GPTQ_AUTOGPTQ_TCGEMV3_MIN_M": "1"})


_TCGEMV28_CHECK = """
import os
# A forced lane-row count changes only the 2-bit kernels.
check_tc_gemv_cases((2,) if "GPTQ_AUTOGPTQ_TCGEMV28_LANE_ROWS" in os.environ else (2, 8))
print("ok")
"""


@pytest.mark.gpu
@pytest.mark.parametrize("lane_rows", ["default", "2", "4"])
def test_cuda_autogptq_2_and_8bit_tensor_core_gemv(lane_rows):
    # The 2- and 8-bit tensor-core GEMV (autogptq_tcgemv28.cu) forced on from m = 1 through
    # GPTQ_AUTOGPTQ_TCGEMV28_MIN_M=1 (read once per process, hence the subprocess). At 2 bits in the
    # default lane batches (4 packed rows up to m = 8 where the groups allow, else 2) and in each forced.
    # Weights (v - z) s rounded once to fp16 (2^-11), fp32 accumulation: the fp16 tolerance. m = 8 / 9
    # is the edge of one and two token tiles; outlier channels (check_autogptq_outliers).
    env = {"GPTQ_AUTOGPTQ_TCGEMV28_MIN_M": "1"}
    if lane_rows != "default":
        env["GPTQ_AUTOGPTQ_TCGEMV28_LANE_ROWS"] = lane_rows
    run_in_subprocess(_TCGEMV28_CHECK, env)


@pytest.mark.gpu
def test_cuda_autogptq_3bit_split_k_repeats_bit_exactly():
    L, W = make_layer(3, 8192, 8192, 128, device="cuda", seed=5)
    x = torch.randn(1, 8192, device="cuda").half()
    y1 = run_autogptq(L, x, False)
    y2 = run_autogptq(L, x, False)
    assert torch.equal(y1, y2)
    assert rel_error(y1, x.double() @ W.t()) < TOL[torch.float16]


# ---- dependent launches (csrc/common/pdl.cuh) --------------------------------------------------------
# On compute capability 9.0+ the exllamav2 GEMV/GEMMs and the 3-bit GEMV are launched so that they may
# start before the kernel in front of them has finished; until griddepcontrol.wait they may only
# prefetch weights into L2. These tests make every call depend on the call or the write just before it,
# with no synchronization in between, so a read of x, or a weight load, ahead of the wait shows up as a
# wrong result, and so does a write of partials or counters that the call before still needs.
def run_gemm_op(L, x, bits):
    if bits != 4:  # 3 bits: the half2 GEMV at m = 1, the tensor-core GEMV at m = 2..16; 2, 8: AutoGPTQ-style
        return run_autogptq(L, x, False)
    return torch.ops.gptq.exllamav2_gemm(x, L["qweight"], L["qzeros"], L["scales"], None, 4, L["group_size"], L["fmt"])


def square_layers(bits, K, count, seed, dtype=torch.float16, act_order=False):
    """`count` K x K layers whose scales are divided by a power of two (exact in fp16) so that a chain
    of them keeps |y| of the order of |x|: with s ~ 0.011 and rms |q - z| of 1.6, 3.2, 6.5 or 104 (2, 3,
    4, 8 bits) an output has rms sqrt(K) s |q - z| |x|, 1.1, 2.3, 4.6 or 73 |x| at K = 4096; divided by
    2, 4, 8 or 128: about 0.6 |x|."""
    div = {2: 2, 3: 4, 4: 8, 8: 128}[bits]
    layers = []
    for i in range(count):
        L, W = make_layer(bits, K, K, 128, act_order=act_order, dtype=dtype, device="cuda", seed=seed + i)
        old = L["scales"]
        L["scales"] = old / div  # fp16 scales of 8-bit layers become subnormal: the reference takes them as stored
        ratio = L["scales"].double() / old.double()  # [G, N]
        layers.append((L, W * ratio[L["g_idx"].long()].t()))
    return layers


def check_chain(steps, refs, x0, graph, tol, label):
    """Feeds x0 through `steps` (each a call on the previous output) with no synchronization in between,
    eagerly, or captured in a CUDA graph (warmed up outside the capture) and replayed on a new x0, after
    poisoning the allocator; then checks every step against float64 on the input it actually got:
    y_i against x_i W_i^T for W_i in `refs`, relative error under `tol`."""
    def chain(x):
        outs = [x]
        for step in steps:
            outs.append(step(outs[-1]))
        return outs

    if graph:
        chain(x0)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            outs = chain(x0)
        x0.copy_(torch.randn_like(x0))
        poison_cuda_allocator()
        g.replay()
    else:
        poison_cuda_allocator()
        outs = chain(x0)
    torch.cuda.synchronize()
    for i, W in enumerate(refs):
        y, x = outs[i + 1], outs[i]
        assert torch.isfinite(y).all(), f"step {i} ({label}): non-finite output"
        err = rel_error(y, x.double() @ W.t())
        assert err < tol, f"step {i} ({label}): {err:.2e}"


@pytest.mark.gpu
@pytest.mark.parametrize("bits,m,dtype", [(4, 1, torch.float16), (4, 3, torch.float16), (4, 16, torch.float16),
                                          (4, 32, torch.float16), (4, 64, torch.float16), (3, 1, torch.float16),
                                          (3, 4, torch.float16), (3, 16, torch.float16), (4, 1, torch.bfloat16),
                                          (8, 1, torch.float16), (2, 3, torch.float16), (8, 16, torch.float16),
                                          (8, 1, torch.bfloat16)])
@pytest.mark.parametrize("graph", [False, True])
def test_cuda_chained_calls_each_read_the_finished_output_of_the_one_before(bits, m, dtype, graph):
    # 8 layers of 4096 x 4096 (split K at every m here; on the H100 fp16 m = 1 and 3-bit take the
    # half2 GEMVs, fp16 m = 3 and bf16 m = 1 the tensor-core GEMV, m = 16..64 the Hopper GEMM, 2 and 8
    # bits at m = 1 the AutoGPTQ-style GEMV with its split-reduction kernel, fp16 m = 3 and 16 their
    # tensor-core GEMV), each fed the previous one's output: eagerly
    # with one synchronization at the end, or captured in a CUDA graph and replayed on a new input.
    # Each step is checked against float64 on the input it actually got (2e-3 in fp16, 1e-2 in bf16: one
    # rounding of y).
    K = 4096
    layers = square_layers(bits, K, 8, seed=100 * bits + m, dtype=dtype)
    x0 = torch.randn(m, K, device="cuda").to(dtype)

    steps = [lambda x, L=L: run_gemm_op(L, x, bits) for L, _ in layers]
    check_chain(steps, [W for _, W in layers], x0, graph, TOL[dtype], f"bits={bits}, m={m}, {dtype}, graph={graph}")


@pytest.mark.gpu
@pytest.mark.parametrize("bits,m,dtype", [(4, 1, torch.float16), (4, 3, torch.float16), (4, 16, torch.float16),
                                          (4, 64, torch.float16), (4, 200, torch.float16), (4, 1, torch.bfloat16),
                                          (4, 16, torch.bfloat16), (3, 1, torch.float16), (8, 3, torch.float16)])
@pytest.mark.parametrize("graph", [False, True])
def test_cuda_chained_act_order_calls_gather_the_finished_output(bits, m, dtype, graph):
    # Act-order layers through the exllamav2 op: x's columns are gathered by a dependent-launch kernel
    # of their own in front of the GEMVs, the tensor-core GEMM and the AutoGPTQ-style kernels (m = 200:
    # dequantize + cuBLAS), and inside the x-staging kernel of the Hopper GEMM (m = 16, 64 on the
    # H100). Both gather before their wait returns only at their peril: the chain feeds each layer the
    # previous output with no synchronization, so a gather of x ahead of the wait, or a GEMV reading the
    # gathered copy before the gather has finished, gives a wrong step. Reference: float64 on the
    # ungathered input and the unsorted weights (2e-3 in fp16, 1e-2 in bf16: one rounding of y).
    K = 4096
    layers = square_layers(bits, K, 6, seed=300 * bits + m, dtype=dtype, act_order=True)
    x0 = torch.randn(m, K, device="cuda").to(dtype)
    steps = []
    for L, _ in layers:
        qs, perm = torch.ops.gptq.exllamav2_prepare(L["qweight"], L["g_idx"], bits, 128)
        steps.append(lambda x, L=L, qs=qs, perm=perm: torch.ops.gptq.exllamav2_gemm(
            x, qs, L["qzeros"], L["scales"], perm, bits, 128, L["fmt"]))
    check_chain(steps, [W for _, W in layers], x0, graph, TOL[dtype], f"bits={bits}, m={m}, {dtype}, graph={graph}")


@pytest.mark.gpu
@pytest.mark.parametrize("m", [1, 16, 200])
def test_cuda_exllamav2_perm_dtypes_and_out_of_range_entries(m):
    # perm may be int32 (what exllamav2_prepare returns) or int64 (what index_select takes): the same
    # output bit for bit. An entry outside [0, K) must not read outside x: the gather (m = 1: in front
    # of the GEMV; m = 16: inside the Hopper GEMM's x staging on the H100, else in front of the
    # tensor-core GEMM; m = 200: in front of dequantize + cuBLAS) stages NaN for it, so every output
    # of the token is NaN (compute-sanitizer memcheck runs this file).
    L, W = make_layer(4, 4096, 4096, 128, act_order=True, device="cuda", seed=11 + m)
    qs, perm = torch.ops.gptq.exllamav2_prepare(L["qweight"], L["g_idx"], 4, 128)
    x = torch.randn(m, 4096, device="cuda").half()
    call = lambda p: torch.ops.gptq.exllamav2_gemm(x, qs, L["qzeros"], L["scales"], p, 4, 128, L["fmt"])
    y32 = call(perm)
    assert rel_error(y32, x.double() @ W.t()) < TOL[torch.float16]
    assert torch.equal(call(perm.long()), y32)
    for bad_value in (4096, -1, 1 << 30):
        bad = perm.clone()
        bad[4093] = bad_value
        assert torch.isnan(call(bad)).all(), f"perm entry {bad_value}"
    with pytest.raises(RuntimeError, match=r"exllamav2_gemm.*perm must be int32 or int64"):
        call(perm.float())
    with pytest.raises(RuntimeError, match=r"exllamav2_gemm.*perm must have shape \[K\]"):
        call(perm[:-8])


@pytest.mark.gpu
@pytest.mark.parametrize("m", [1, 3, 17])
def test_cuda_exllamav2_act_order_gather_k_not_a_multiple_of_8(m):
    # 8 bits allow K = 4 (mod 8): the gather writes 2-byte elements instead of 16-byte rows, and the
    # AutoGPTQ-style kernels run on the sorted rows (the last group is 4 channels).
    L, W = make_layer(8, 1028, 256, 128, act_order=True, device="cuda", seed=29 + m)
    x = torch.randn(m, 1028, device="cuda").half()
    y = run_exllamav2(L, x, True)
    assert torch.isfinite(y).all()
    assert rel_error(y, x.double() @ W.t()) < TOL[torch.float16]


@pytest.mark.gpu
@pytest.mark.parametrize("bits,m", [(4, 1), (4, 16), (4, 64), (3, 1), (8, 1), (8, 16), (2, 4)])
def test_cuda_call_sees_weights_written_just_before_it(bits, m):
    # A kernel rewrites the packed weights in place and the GEMM follows at once: it must use the new
    # codes (weights are only prefetched ahead of the wait, never loaded). Alternating two layers'
    # codes in one buffer 6 times, each call is compared with the layer whose codes it should read.
    (A, WA), (B, WB) = square_layers(bits, 4096, 2, seed=7 + m)
    buf = dict(A)
    buf["qweight"] = A["qweight"].clone()
    buf["qzeros"] = A["qzeros"].clone()
    x = torch.randn(m, 4096, device="cuda").half()
    outs = []
    for i in range(6):
        src = A if i % 2 == 0 else B
        torch.add(src["qweight"], 0, out=buf["qweight"])  # an elementwise kernel, not a memcpy
        torch.add(src["qzeros"], 0, out=buf["qzeros"])
        buf["scales"] = src["scales"]
        outs.append(run_gemm_op(buf, x, bits))
    torch.cuda.synchronize()
    for i, y in enumerate(outs):
        W = WA if i % 2 == 0 else WB
        err = rel_error(y, x.double() @ W.t())
        assert err < TOL[torch.float16], f"call {i} (bits={bits}, m={m}): {err:.2e}"


# ---- CUTLASS's mixed-input GEMM (Hopper, large batches) -----------------------------------------------
def cutlass_gemm_built_and_usable():
    import importlib

    fams = importlib.import_module("gptq.env").collect()["kernel_families"]  # gptq.env is also a function
    return "cutlass_mixed" in fams and torch.cuda.get_device_capability() == (9, 0)


_CUTLASS_CHECK = """
# Every 4-bit call from m = 1 takes the CUTLASS GEMM where it fits (GPTQ_EXLLAMAV2_CUTLASS_MIN_M=1):
# weights w = q s + z' with z' = -z s rounded to x's dtype (in fp16 about 2^-12 |z s| a weight, a
# normwise error near 4e-4 against the 2e-3 tolerance; in bf16 2^-9, near 3e-3 against 1e-2), fp32
# accumulation, output rounded once. Edge sizes: one token, 3 and 17 (a partial 256-token tile), 300 (two
# tiles); groups 64 (one tile), 128, 256, -1; v1 and v2 zero points; act-order rows sorted at load;
# 2000-sigma outlier channels. Shapes it refuses (K = 4160, not a multiple of 64; N = 40, not a multiple
# of 16; groups of 32) fall back to the other kernels and stay correct.
f16, bf16 = torch.float16, torch.bfloat16
cases = [(4096, 4096, 128, "gptq", False, 1, f16), (4096, 4096, 64, "gptq_v2", True, 3, f16),
         (4096, 11008, 256, "gptq", False, 17, f16), (11008, 4096, -1, "gptq", False, 300, f16),
         (4096, 4352, 128, "gptq", True, 300, f16), (8192, 8192, 64, "gptq", False, 64, f16),
         (4160, 4352, 128, "gptq", False, 33, f16), (4096, 40, 128, "gptq", False, 17, f16),
         (4096, 4096, 32, "gptq", True, 17, f16),
         (4096, 4096, 128, "gptq", False, 1, bf16), (4096, 4352, 64, "gptq_v2", True, 300, bf16),
         (11008, 4096, -1, "gptq", False, 17, bf16), (4160, 4352, 128, "gptq", False, 33, bf16)]
for K, N, group_size, fmt, act_order, m, dtype in cases:
    check_exllamav2_outliers(K, N, group_size, m, dtype, act_order, fmt, seed=K + N + m)
print("ok")
"""


@pytest.mark.gpu
def test_cuda_exllamav2_cutlass_gemm_from_one_token():
    run_in_subprocess(_CUTLASS_CHECK, {"GPTQ_EXLLAMAV2_CUTLASS_MIN_M": "1"})


@pytest.mark.gpu
@pytest.mark.parametrize("m,dtype", [(1024, torch.float16), (1500, torch.float16), (2048, torch.float16),
                                     (1024, torch.bfloat16)])
@pytest.mark.parametrize("K,N", REAL_SHAPES)
def test_cuda_exllamav2_cutlass_gemm_real_shapes(m, dtype, K, N):
    # In the op's default range (m = 1024..2048, fp16 and bf16) on the H100: the CUTLASS GEMM (asserted through the
    # profiler's kernel names where the build has it), against float64; 1500 ends in a partial tile.
    # Elsewhere the same calls take the other kernels, with the same tolerance.
    L, W = make_layer(4, K, N, 128, dtype=dtype, device="cuda", seed=K + 7 * N + m)
    x = torch.randn(m, K, device="cuda").to(dtype)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        y = run_exllamav2(L, x, False)
        torch.cuda.synchronize()
    names = " ".join(e.key for e in prof.key_averages())
    if cutlass_gemm_built_and_usable():
        assert "convert_kernel" in names and "GemmUniversal" in names, names
    assert y.dtype == dtype and torch.isfinite(y).all()
    assert rel_error(y, x.double() @ W.t()) < TOL[dtype]


# ---- the "cutlass" backend's ops: CUTLASS's GEMM on a copy of the weights converted once ------------------
def run_cutlass_copy(L, x, act_order):
    """gptq::cutlass_prepare at "load", then gptq::cutlass_gemm on the copy (outputs poisoned first)."""
    if act_order:
        qs, perm = torch.ops.gptq.exllamav2_prepare(L["qweight"], L["g_idx"], L["bits"], L["group_size"])
    else:
        qs, perm = L["qweight"], None
    w, z = torch.ops.gptq.cutlass_prepare(qs, L["qzeros"], L["scales"], L["bits"], L["group_size"], L["fmt"])
    poison_cuda_allocator()
    return torch.ops.gptq.cutlass_gemm(x, qs, L["qzeros"], L["scales"], perm, w, z, L["bits"], L["group_size"], L["fmt"])


_CUTLASS_COPY_CHECK = """
from test_kernel_gemm import run_cutlass_copy
# Every call from m = 1 takes CUTLASS's GEMM on the copy (GPTQ_CUTLASS_COPY_MIN_M=1). The copy holds the
# same numbers as the per-call conversion (z' = -z s rounded once to x's dtype: about 4e-4 normwise in
# fp16 against the 2e-3 tolerance, 3e-3 in bf16 against 1e-2). Edge sizes m = 1, 3, 17 (partial
# 256-token tiles), 300 (two tiles); groups 64, 128, 256, -1; v1 and v2 zero points; act-order; outliers
# of 2000 sigma every 97th channel.
f16, bf16 = torch.float16, torch.bfloat16
cases = [(4096, 4096, 128, "gptq", False, 1, f16), (4096, 4096, 64, "gptq_v2", True, 3, f16),
         (4096, 11008, 256, "gptq", False, 17, f16), (11008, 4096, -1, "gptq", False, 300, f16),
         (4096, 4352, 128, "gptq", True, 300, f16), (8192, 8192, 64, "gptq", False, 64, f16),
         (4096, 4096, 128, "gptq", False, 1, bf16), (4096, 4352, 64, "gptq_v2", True, 300, bf16),
         (11008, 4096, -1, "gptq", False, 17, bf16)]
for K, N, g, fmt, act_order, m, dtype in cases:
    check_exllamav2_outliers(K, N, g, m, dtype, act_order, fmt, seed=K + N + m, run=run_cutlass_copy)
print("ok")
"""


def cutlass_copy_usable():
    return torch.cuda.is_available() and cutlass_gemm_built_and_usable()


@pytest.mark.gpu
def test_cuda_cutlass_copy_gemm_from_one_token():
    if not cutlass_copy_usable():
        pytest.skip("gptq::cutlass_gemm needs compute capability 9.0 and a build with the CUTLASS headers")
    run_in_subprocess(_CUTLASS_COPY_CHECK, {"GPTQ_CUTLASS_COPY_MIN_M": "1"})


@pytest.mark.gpu
@pytest.mark.parametrize("m,dtype,K,N", [(m, d, K, N) for m, d in [(255, torch.float16), (256, torch.float16),
                                                                    (1024, torch.float16), (1024, torch.bfloat16)]
                                         for K, N in REAL_SHAPES] + [(4096, torch.float16, 4096, 4096)])
def test_cuda_cutlass_copy_gemm_real_shapes(m, dtype, K, N):
    # At the default rule: CUTLASS's GEMM alone (no conversion kernel in the call, asserted through the
    # profiler) from m = 256 where its 128 x 256 tiles number 80 or more, else the exllamav2 kernels (m = 255;
    # 4096x4096, 11008x4096 and 28672x8192 at m = 256); against float64 (m = 4096 on the smallest layer
    # only: the float64 reference of the large ones takes tens of seconds).
    if not cutlass_copy_usable():
        pytest.skip("gptq::cutlass_gemm needs compute capability 9.0 and a build with the CUTLASS headers")
    L, W = make_layer(4, K, N, 128, dtype=dtype, device="cuda", seed=K + 5 * N + m)
    x = torch.randn(m, K, device="cuda").to(dtype)
    w, z = torch.ops.gptq.cutlass_prepare(L["qweight"], L["qzeros"], L["scales"], 4, 128, L["fmt"])
    torch.cuda.synchronize()
    poison_cuda_allocator()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        y = torch.ops.gptq.cutlass_gemm(x, L["qweight"], L["qzeros"], L["scales"], None, w, z, 4, 128, L["fmt"])
        torch.cuda.synchronize()
    names = " ".join(e.key for e in prof.key_averages())
    assert "convert_kernel" not in names, names
    tiles = -(-N // 128) * -(-m // 256)
    assert ("GemmUniversal" in names) == (m >= 256 and tiles >= 80), (m, K, N, names)
    assert y.dtype == dtype and torch.isfinite(y).all()
    assert rel_error(y, x.double() @ W.t()) < TOL[dtype]


@pytest.mark.gpu
def test_cuda_cutlass_copy_ops_name_the_bad_argument():
    if not cutlass_copy_usable():
        pytest.skip("gptq::cutlass_gemm needs compute capability 9.0 and a build with the CUTLASS headers")
    L, _ = make_layer(4, 1024, 512, 128, device="cuda", seed=3)
    args = (L["qweight"], L["qzeros"], L["scales"])
    w, z = torch.ops.gptq.cutlass_prepare(*args, 4, 128, L["fmt"])
    x = torch.randn(300, 1024, device="cuda").half()
    with pytest.raises(RuntimeError, match=r"gptq::cutlass_gemm.*cutlass_weights must be int32 \[N K / 8\] = \[65536\]"):
        torch.ops.gptq.cutlass_gemm(x, *args, None, w[:-8], z, 4, 128, L["fmt"])
    with pytest.raises(RuntimeError, match=r"gptq::cutlass_gemm.*cutlass_zeros must be Half \[G, N\] = \[8, 512\]"):
        torch.ops.gptq.cutlass_gemm(x, *args, None, w, z.bfloat16(), 4, 128, L["fmt"])
    L3, _ = make_layer(4, 1024, 520, 128, device="cuda", seed=3)
    with pytest.raises(RuntimeError, match=r"gptq::cutlass_prepare.*N a multiple of 16 \(got 520\)"):
        torch.ops.gptq.cutlass_prepare(L3["qweight"], L3["qzeros"], L3["scales"], 4, 128, L3["fmt"])
