"""QuantLinear holds checkpoint tensors under their checkpoint names and computes x W^T + b.

Reference: the float64 product with the weight dequantized by reference.py. Tolerance: the torch
backend rounds W to fp16 once (2^-11 relative) and accumulates in fp32 on the CPU, so 2e-3.
"""

import pytest
import torch

import gptq
from conftest import rel_error
from gptq.nn import QuantLinear
from reference import ref_dequantize, ref_pack_cols, ref_pack_rows


def random_layer(bits, K, N, g, act_order=False, bias=True, dtype=torch.float16):
    G = 1 if g == -1 else -(-K // g)
    q = torch.randint(0, 2**bits, (K, N), dtype=torch.int32)
    z = torch.randint(0, 2**bits, (G, N), dtype=torch.int32)
    s = (torch.rand(G, N) * 0.02 + 1e-3).to(dtype)
    gi = torch.arange(K, dtype=torch.int32) // g if g != -1 else torch.zeros(K, dtype=torch.int32)
    if act_order:
        gi = gi[torch.randperm(K)]
    b = torch.randn(N).to(dtype) if bias else None
    layer = QuantLinear.from_tensors(ref_pack_rows(q, bits), ref_pack_cols((z - 1) % 2**bits, bits), s, gi, b,
                                     bits=bits, group_size=g)
    W = ref_dequantize(q, z, s, gi)
    return layer, W, b


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("m", [1, 3, 17])
def test_forward_matches_float64_reference(bits, m):
    layer, W, b = random_layer(bits, 256, 64, 128, act_order=(m == 3))
    x = torch.randn(m, 256).half()
    y = layer(x)
    ref = x.double() @ W.t() + b.double()
    assert y.shape == (m, 64) and y.dtype == torch.float16
    assert rel_error(y, ref) < 2e-3
    assert layer.backend.name == "autogptq"  # the CPU kernel of gptq::autogptq_gemm


def test_state_dict_uses_checkpoint_names_and_reloads():
    layer, _, _ = random_layer(4, 128, 32, 32)
    sd = layer.state_dict()
    assert set(sd) == {"qweight", "qzeros", "scales", "g_idx", "bias"}
    fresh = QuantLinear(4, 32, 128, 32, bias=True)
    fresh.load_state_dict(sd)
    x = torch.randn(2, 5, 128).half()
    assert torch.equal(fresh(x), layer(x))


def test_input_gradient_flows_for_lora_training():
    layer, W, _ = random_layer(4, 128, 32, 64, bias=False, dtype=torch.float32)
    layer.post_init(trainable=True)
    x = torch.randn(4, 128, requires_grad=True)
    layer(x).sum().backward()
    # d(sum(x W^T))/dx = sum over outputs of W = W.sum(0), same for every row
    assert rel_error(x.grad, W.sum(0).expand(4, -1)) < 1e-5


def test_bad_arguments_are_refused_clearly():
    with pytest.raises(ValueError, match="bits must be one of"):
        QuantLinear(5, 128, 256, 64, bias=False)
    with pytest.raises(ValueError, match="in_features must be a multiple of 32"):
        QuantLinear(4, 128, 100, 64, bias=False)
    layer, _, _ = random_layer(4, 128, 32, 32)
    with pytest.raises(ValueError, match="backend must be 'auto'"):
        layer.post_init(backend="no-such-kernel")
    with pytest.raises(ValueError, match="input has 64 features, expected 128"):
        layer(torch.randn(1, 64).half())
