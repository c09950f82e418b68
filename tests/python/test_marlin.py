"""Specification of the Marlin GEMM ops: gptq.marlin_repack (exact re-layout, CPU and CUDA) and
gptq.marlin_gemm (CUDA), see include/gptq/marlin.h.

References: the repacked words are decoded by an independent numpy reading of the documented
layout (csrc/kernels/marlin/marlin_launch.h); the GEMM is checked against x (float64) @ W (float64),
W from the foundation's dequantize with fp32 scales (exact: an fp16 scale times an integer of at most
8 bits fits fp32's mantissa). Tolerances: the kernel rounds each dequantized weight once to the
activation dtype (relative 2^-11 fp16, 2^-8 bf16), accumulates in fp32 and rounds the output once;
over K terms the errors average out, so ||out - ref|| / ||ref|| stays below 2e-3 (fp16) and 1e-2
(bf16).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gptq
from conftest import rel_error
from gptq.kernels import marlin

TOL = {torch.float16: 2e-3, torch.bfloat16: 1e-2}


def random_layer(K, N, bits, group_size, *, act_order=False, symmetric=False, dtype=torch.float16, device="cpu",
                 checkpoint_format="gptq", gen=None):
    """Random codes, zeros and scales packed in the checkpoint format, plus the true (unpacked) values."""
    G = 1 if group_size == -1 else -(-K // group_size)
    gs = K if group_size == -1 else group_size
    q = torch.randint(0, 2**bits, (K, N), dtype=torch.int32, generator=gen)
    if symmetric:
        z = torch.full((G, N), 2 ** (bits - 1), dtype=torch.int32)
    else:
        z = torch.randint(0, 2**bits, (G, N), dtype=torch.int32, generator=gen)
    scales = (torch.rand(G, N, generator=gen) * 0.02 + 0.002).to(dtype)
    g_idx = torch.arange(K, dtype=torch.int32) // gs
    if act_order:
        g_idx = g_idx[torch.randperm(K, generator=gen)]
    stored = (z - 1) % 2**bits if checkpoint_format == "gptq" else z
    qweight = gptq.pack_rows(q, bits)
    qzeros = gptq.pack_cols(stored, bits)
    t = lambda v: v.to(device)  # noqa: E731
    return dict(qweight=t(qweight), qzeros=t(qzeros), scales=t(scales), g_idx=t(g_idx)), (q, z, scales, g_idx)


def decode_tiles(qweight_r: torch.Tensor, bits: int, K_pad: int, N_pad: int) -> np.ndarray:
    """Codes [K_pad, N_pad] from the repacked words, reading the layout as documented: per 64-column
    tile nt and 16-row slice kt, words [h][lane][w4]; lane (g, t) owns column 8j + g and rows
    2t, 2t+1, 2t+8, 2t+9 of sub-tile j."""
    words = qweight_r.cpu().numpy().view(np.uint32).reshape(N_pad // 64, K_pad // 16, bits // 4, 32, 4)
    out = np.full((K_pad, N_pad), -1, dtype=np.int64)
    lane = np.arange(32)
    g, t = lane // 4, lane % 4
    for h in range(bits // 4):
        for w4 in range(4):
            word = words[:, :, h, :, w4].astype(np.int64)  # [NT, KT, 32]
            for v in range(32 // bits):
                code = (word >> (bits * v)) & (2**bits - 1)
                if bits == 4:
                    sub = 2 * w4 + (v & 1)
                    kl = 2 * t + ((v >> 2) & 1) + 8 * ((v >> 1) & 1)
                else:
                    sub = 4 * h + w4
                    kl = 2 * t + (v >> 1) + 8 * (v & 1)
                nl = 8 * sub + g
                for nt in range(N_pad // 64):
                    rows = (np.arange(K_pad // 16)[:, None] * 16 + kl[None, :]).ravel()
                    cols = np.broadcast_to(nt * 64 + nl[None, :], (K_pad // 16, 32)).ravel()
                    out[rows, cols] = code[nt].ravel()
    return out


# ---- CPU: the repack is an exact re-layout ---------------------------------------------------------

@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("act_order", [False, True])
def test_repack_layout_is_the_documented_tile_order(bits, act_order):
    K, N, gs = 384, 200, 128  # N = 200 -> N_pad = 256, 3 groups
    gen = torch.Generator().manual_seed(10 + bits + act_order)
    packed, (q, z, scales, g_idx) = random_layer(K, N, bits, gs, act_order=act_order, gen=gen)
    qw, sc, zp, perm = torch.ops.gptq.marlin_repack(
        packed["qweight"], packed["qzeros"], packed["scales"], packed["g_idx"], bits, gs, 1
    )
    assert qw.shape == (4, 384 * 2 * bits) and qw.dtype == torch.int32
    assert sc.shape == (3, 256) and zp.shape == (3, 256) and perm.shape == (K,)
    codes = decode_tiles(qw, bits, 384, 256)
    sorted_q = q[perm.long()] if act_order else q
    assert np.array_equal(codes[:K, :N], sorted_q.numpy())
    assert (codes[:, N:] == 0).all()
    if act_order:
        assert torch.equal(g_idx[perm.long()], torch.arange(K, dtype=torch.int32) // gs)
    else:
        assert torch.equal(perm, torch.arange(K, dtype=torch.int32))
    # Scales and zeros: position g*8 + j of each 64-column tile holds column 8j + g.
    cols = torch.arange(256).view(4, 8, 8).transpose(1, 2).reshape(-1)
    valid = cols < N
    assert torch.equal(sc[:, valid], scales[:, cols[valid]])
    assert torch.equal(zp[:, valid].float(), z[:, cols[valid]].float())  # v1's stored z - 1 undone


def test_repack_pads_k_to_128_and_keeps_ragged_groups():
    K, N, bits, gs = 200, 64, 4, 32  # K_pad 256; 7 groups of 32, the last one short
    packed, (q, _, _, _) = random_layer(K, N, bits, gs, gen=torch.Generator().manual_seed(3))
    qw, sc, zp, perm = torch.ops.gptq.marlin_repack(packed["qweight"], packed["qzeros"], packed["scales"], None,
                                                    bits, gs, 2)
    assert sc.shape == (8, 64)
    codes = decode_tiles(qw, bits, 256, 64)
    assert np.array_equal(codes[:K], q.numpy()) and (codes[K:] == 0).all()


def test_meta_implementations_give_the_shapes():
    K, N, bits, gs = 640, 200, 8, 64
    packed, _ = random_layer(K, N, bits, gs, gen=torch.Generator().manual_seed(4))
    real = torch.ops.gptq.marlin_repack(packed["qweight"], packed["qzeros"], packed["scales"], packed["g_idx"],
                                        bits, gs, 1)
    meta = {k: v.to("meta") for k, v in packed.items()}
    fake = torch.ops.gptq.marlin_repack(meta["qweight"], meta["qzeros"], meta["scales"], meta["g_idx"], bits, gs, 1)
    for r, f in zip(real, fake):
        assert r.shape == f.shape and r.dtype == f.dtype
    x = torch.empty(2, 3, K, dtype=torch.float16, device="meta")
    y = torch.ops.gptq.marlin_gemm(x, fake[0], fake[1], None, None, bits, gs, N)
    assert y.shape == (2, 3, N) and y.dtype == torch.float16
    torch.library.opcheck(torch.ops.gptq.marlin_repack.default,
                          (packed["qweight"], packed["qzeros"], packed["scales"], packed["g_idx"], bits, gs, 1),
                          test_utils=("test_schema", "test_faketensor"))


def test_errors_name_the_op_the_value_and_the_rule():
    packed, _ = random_layer(256, 64, 4, 128, gen=torch.Generator().manual_seed(5))
    args = (packed["qweight"], packed["qzeros"], packed["scales"], None)
    p48, _ = random_layer(192, 64, 4, 48, gen=torch.Generator().manual_seed(7))
    with pytest.raises(RuntimeError, match=r"gptq::marlin_repack: group_size must be .* got 48"):
        torch.ops.gptq.marlin_repack(p48["qweight"], p48["qzeros"], p48["scales"], None, 4, 48, 1)
    p3, _ = random_layer(256, 64, 2, 128, gen=torch.Generator().manual_seed(6))
    with pytest.raises(RuntimeError, match=r"gptq::marlin_repack: bits must be 4 or 8 .* got 2"):
        torch.ops.gptq.marlin_repack(p3["qweight"], p3["qzeros"], p3["scales"], None, 2, 128, 1)
    # act-order with unequal groups cannot be sorted into contiguous groups of group_size rows
    bad = torch.zeros(256, dtype=torch.int32)
    bad[255] = 1
    with pytest.raises(RuntimeError, match=r"gptq::marlin_repack: act-order g_idx must put exactly group_size"):
        torch.ops.gptq.marlin_repack(*args[:3], bad, 4, 128, 1)


# ---- CUDA: the GEMM against float64 ---------------------------------------------------------------

def poison_allocator(device="cuda"):
    """Fills free blocks of the caching allocator with NaN so that an output the op allocates starts
    as NaN wherever the kernel forgets to write."""
    blocks = [torch.full((1 << 22,), float("nan"), dtype=torch.float32, device=device) for _ in range(16)]
    del blocks


def reference(x, packed, bits, gs, checkpoint_format):
    W = gptq.dequantize(packed["qweight"], packed["qzeros"], packed["scales"].float(), packed["g_idx"], bits, gs,
                        checkpoint_format)  # fp32, exact
    return (x.double() @ W.double().t())


def run_case(K, N, bits, gs, ms, *, dtype=torch.float16, act_order=False, symmetric=False, checkpoint_format="gptq",
             modes=("auto",), seed=0):
    gen = torch.Generator().manual_seed(seed)
    packed, _ = random_layer(K, N, bits, gs, act_order=act_order, symmetric=symmetric, dtype=dtype, device="cuda",
                             checkpoint_format=checkpoint_format, gen=gen)
    w = marlin.repack(packed["qweight"], packed["qzeros"], packed["scales"], packed["g_idx"], bits, gs,
                      checkpoint_format)
    # group_size -1 has one group, so any g_idx is the identity order
    assert (w.zeros is None) == symmetric and (w.perm is None) == (not act_order or gs == -1)
    for m in ms:
        x = torch.randn(m, K, dtype=dtype, device="cuda")
        ref = reference(x, packed, bits, gs, checkpoint_format)
        for mode in modes:
            poison_allocator()
            y = marlin.gemm(x, w, mode)
            assert y.shape == (m, N) and y.dtype == dtype
            assert torch.isfinite(y).all(), (m, mode)
            err = rel_error(y, ref)
            assert err < TOL[dtype], f"K={K} N={N} bits={bits} g={gs} m={m} mode={mode}: rel error {err:.2e}"


@pytest.mark.gpu
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("gs", [-1, 32, 64, 128])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("variant", ["sym", "asym-v1", "asym-v2-actorder"])
def test_gemm_every_config_and_edge_m(bits, gs, dtype, variant):
    # K = 640: 5 groups of 128 (odd count), K_pad = K; N = 200: N_pad = 256 (a ragged tile).
    run_case(640, 200, bits, gs, [1, 3, 17, 33, 64, 100], dtype=dtype, symmetric=variant == "sym",
             act_order="actorder" in variant, checkpoint_format="gptq_v2" if "v2" in variant else "gptq",
             modes=("fused", "dense"), seed=bits + gs)


@pytest.mark.gpu
@pytest.mark.parametrize("K,N,bits,gs", [(200, 64, 4, 32), (100, 96, 8, 64), (1000, 40, 4, -1), (136, 8, 8, 128)])
def test_gemm_k_and_n_off_the_tile(K, N, bits, gs):
    run_case(K, N, bits, gs, [1, 5, 70], modes=("fused", "dense"), seed=K)
    run_case(K, N, bits, gs, [2], dtype=torch.bfloat16, act_order=gs != -1, seed=K + 1)


@pytest.mark.gpu
@pytest.mark.parametrize("K,N", [(4096, 4096), (4096, 11008), (11008, 4096), (8192, 28672), (28672, 8192)])
def test_gemm_model_shapes(K, N):
    big = K * N > 1e8
    run_case(K, N, 4, 128, [1, 16] if big else [1, 17, 64, 300], seed=7, act_order=not big)
    if not big:
        run_case(K, N, 8, 128, [3], dtype=torch.bfloat16, seed=8)


@pytest.mark.gpu
def test_gemm_large_m_and_leading_dims():
    gen = torch.Generator().manual_seed(9)
    packed, _ = random_layer(1024, 512, 4, 128, dtype=torch.float16, device="cuda", gen=gen)
    w = marlin.repack(packed["qweight"], packed["qzeros"], packed["scales"], packed["g_idx"], 4, 128)
    x = torch.randn(2, 2048, 1024, dtype=torch.float16, device="cuda")
    ref = reference(x.view(-1, 1024), packed, 4, 128, "gptq").view(2, 2048, 512)
    for mode in ("auto", "fused", "dense"):
        y = marlin.gemm(x, w, mode)
        assert y.shape == (2, 2048, 512)
        assert rel_error(y, ref) < 2e-3, mode


@pytest.mark.gpu
def test_gemm_split_k_is_deterministic():
    gen = torch.Generator().manual_seed(11)
    packed, _ = random_layer(4096, 256, 4, 128, device="cuda", gen=gen)  # 4 column tiles: K is split
    w = marlin.repack(packed["qweight"], packed["qzeros"], packed["scales"], packed["g_idx"], 4, 128)
    x = torch.randn(5, 4096, dtype=torch.float16, device="cuda")
    first = marlin.gemm(x, w, "fused")
    assert rel_error(first, reference(x, packed, 4, 128, "gptq")) < 2e-3
    for _ in range(5):
        assert torch.equal(marlin.gemm(x, w, "fused"), first)
    # Another stream, then back: the same bits.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        on_side = marlin.gemm(x, w, "fused")
    torch.cuda.current_stream().wait_stream(side)
    assert torch.equal(on_side, first)
    assert torch.equal(marlin.gemm(x, w, "fused"), first)


@pytest.mark.gpu
def test_repack_on_cuda_equals_repack_on_cpu():
    packed, _ = random_layer(512, 128, 4, 64, act_order=True, gen=torch.Generator().manual_seed(12))
    cpu = torch.ops.gptq.marlin_repack(packed["qweight"], packed["qzeros"], packed["scales"], packed["g_idx"], 4, 64, 1)
    gpu = torch.ops.gptq.marlin_repack(*(packed[k].cuda() for k in ("qweight", "qzeros", "scales", "g_idx")), 4, 64, 1)
    for c, g in zip(cpu, gpu):
        assert torch.equal(c, g.cpu())


@pytest.mark.gpu
def test_gemm_errors_name_the_argument():
    packed, _ = random_layer(256, 64, 4, 128, device="cuda", gen=torch.Generator().manual_seed(13))
    w = marlin.repack(packed["qweight"], packed["qzeros"], packed["scales"], packed["g_idx"], 4, 128)
    with pytest.raises(RuntimeError, match=r"gptq::marlin_gemm: x has K = 300 input channels"):
        torch.ops.gptq.marlin_gemm(torch.randn(1, 300, dtype=torch.float16, device="cuda"), w.qweight, w.scales,
                                   None, None, 4, 128, 64)
    with pytest.raises(RuntimeError, match=r"gptq::marlin_gemm: scales must have x's dtype"):
        marlin.gemm(torch.randn(1, 256, dtype=torch.bfloat16, device="cuda"), w)
