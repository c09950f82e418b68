"""Specification of the checkpoint-format ops through torch.ops.gptq and the gptq package.

Reference: reference.py (bit-by-bit numpy packing, float64 dequantization). Tolerances: fp16 output
is one fp32 product rounded once (relative 2^-11 per element), bf16 rounded once (2^-8).
"""

import pytest
import torch

import gptq
from conftest import rel_error
from reference import ref_dequantize, ref_pack_cols, ref_pack_rows

BITS = [2, 3, 4, 8]


@pytest.mark.parametrize("bits", BITS)
def test_pack_rows_is_the_continuous_bit_stream(bits):
    codes = torch.randint(0, 2**bits, (96, 17), dtype=torch.int32)
    packed = gptq.pack_rows(codes, bits)
    assert packed.shape == (96 * bits // 32, 17) and packed.dtype == torch.int32
    assert torch.equal(packed, ref_pack_rows(codes, bits))
    assert torch.equal(gptq.unpack_rows(packed, bits), codes)
    assert torch.equal(torch.ops.gptq.unpack_rows(packed, bits), codes)


@pytest.mark.parametrize("bits", BITS)
def test_pack_cols_round_trip(bits):
    codes = torch.randint(0, 2**bits, (3, 64), dtype=torch.uint8)
    packed = gptq.pack_cols(codes, bits)
    assert torch.equal(packed, ref_pack_cols(codes, bits))
    assert torch.equal(gptq.unpack_cols(packed, bits), codes.int())


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("checkpoint_format", ["gptq", "gptq_v2"])
def test_dequantize_matches_float64_reference(bits, act_order, checkpoint_format):
    K, N, g = 384, 64, 128
    G = K // g
    q = torch.randint(0, 2**bits, (K, N), dtype=torch.int32)
    z = torch.randint(0, 2**bits, (G, N), dtype=torch.int32)  # includes 0: v1 stores it as 2^bits - 1
    scales = (torch.rand(G, N) * 0.02 + 1e-3).half()
    g_idx = torch.arange(K, dtype=torch.int32) // g
    if act_order:
        g_idx = g_idx[torch.randperm(K)]
    stored = (z - 1) % 2**bits if checkpoint_format == "gptq" else z
    W = gptq.dequantize(ref_pack_rows(q, bits), ref_pack_cols(stored, bits), scales, g_idx, bits, g, checkpoint_format)
    assert W.shape == (N, K) and W.dtype == torch.float16
    assert rel_error(W, ref_dequantize(q, z, scales, g_idx)) < 1e-3


def test_symmetric_4bit_v1_zero_word_is_0x77777777():
    # Symmetric 4-bit quantization has zero point 8 everywhere, stored as 7 in format "gptq".
    zeros = torch.full((2, 64), 7, dtype=torch.int32)
    packed = gptq.pack_cols(zeros, 4)
    assert (packed == 0x77777777).all()


def test_errors_name_the_op_the_value_and_the_rule():
    qweight = torch.zeros(16, 64, dtype=torch.int32)
    qzeros = torch.zeros(1, 8, dtype=torch.int32)
    scales = torch.ones(1, 64, dtype=torch.float16)
    with pytest.raises(RuntimeError, match=r"gptq::dequantize: bits must be one of \{2, 3, 4, 8\}, got 6"):
        torch.ops.gptq.dequantize(qweight, qzeros, scales, None, 6, -1, 1)
    with pytest.raises(RuntimeError, match="scales has 1 groups but K = 128 with group_size 32 needs 4"):
        gptq.dequantize(qweight, qzeros, scales, None, 4, 32)
    with pytest.raises(ValueError, match="checkpoint_format must be one of"):
        gptq.dequantize(qweight, qzeros, scales, None, 4, -1, "marlin")
    with pytest.raises(RuntimeError, match=r"codes must lie in \[0, 8\)"):
        gptq.pack_rows(torch.full((32, 2), 9), 3)


def test_opcheck_and_compile_fullgraph():
    """The op's schema, Meta implementation and fake-tensor behaviour agree (torch.library.opcheck),
    and torch.compile traces it without graph breaks."""
    bits, K, N, g = 4, 256, 64, 128
    args = (
        torch.randint(-(2**31), 2**31 - 1, (K * bits // 32, N), dtype=torch.int32),
        torch.randint(-(2**31), 2**31 - 1, (K // g, N * bits // 32), dtype=torch.int32),
        torch.rand(K // g, N).half(),
        None,
        bits,
        g,
        1,
    )
    torch.library.opcheck(torch.ops.gptq.dequantize.default, args)
    torch.library.opcheck(torch.ops.gptq.unpack_rows.default, (args[0], bits))

    def f(qw, qz, s):
        return torch.ops.gptq.dequantize(qw, qz, s, None, bits, g, 1) * 2

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(*args[:3]), f(*args[:3]))


@pytest.mark.gpu
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dequantize_cuda_matches_reference_and_cpu(bits, dtype):
    # Llama-2-7B's MLP down projection (K = 11008, N = 4096), act-order groups of 128.
    K, N, g = 11008, 4096, 128
    G = K // g
    q = torch.randint(0, 2**bits, (K, N), dtype=torch.int32)
    z = torch.randint(0, 2**bits, (G, N), dtype=torch.int32)
    scales = (torch.rand(G, N) * 0.02 + 1e-3).to(dtype)
    g_idx = (torch.arange(K, dtype=torch.int32) // g)[torch.randperm(K)]
    qw, qz = gptq.pack_rows(q, bits), gptq.pack_cols((z - 1) % 2**bits, bits)
    W = gptq.dequantize(qw.cuda(), qz.cuda(), scales.cuda(), g_idx.cuda(), bits, g)
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    assert rel_error(W, ref_dequantize(q, z, scales, g_idx)) < tol
    assert torch.equal(W.cpu(), gptq.dequantize(qw, qz, scales, g_idx, bits, g))
