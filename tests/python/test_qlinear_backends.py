"""QuantLinear's kernel backends: the automatic choice, explicit names and AutoGPTQ's aliases,
refusals with reasons, post_init_model's summary line, and (on a GPU) every backend against the float64
reference, torch.compile(fullgraph=True) and CUDA graph capture of a model made of QuantLinear layers.

Tolerance 2e-3 (fp16): kernels accumulate in fp32 and round y once to fp16; the bias add rounds once more.
"""

import logging

import pytest
import torch
from torch import nn

from conftest import rel_error
from gptq.nn import ALIASES, QuantLinear, post_init_model
from reference import ref_dequantize, ref_pack_cols, ref_pack_rows


def random_layer(bits, K, N, g, act_order=False, bias=True, dtype=torch.float16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    G = 1 if g == -1 else -(-K // g)
    q = torch.randint(0, 2**bits, (K, N), dtype=torch.int32, generator=gen)
    z = torch.randint(0, 2**bits, (G, N), dtype=torch.int32, generator=gen)
    s = (torch.rand(G, N, generator=gen) * 0.02 + 1e-3).to(dtype)
    gi = torch.arange(K, dtype=torch.int32) // g if g != -1 else torch.zeros(K, dtype=torch.int32)
    if act_order:
        gi = gi[torch.randperm(K, generator=gen)]
    b = torch.randn(N, generator=gen).to(dtype) if bias else None
    layer = QuantLinear.from_tensors(ref_pack_rows(q, bits), ref_pack_cols((z - 1) % 2**bits, bits), s, gi, b,
                                     bits=bits, group_size=g)
    return layer, ref_dequantize(q, z, s, gi), b


def test_auto_on_cpu_is_autogptq_trainable_is_torch_and_cuda_only_names_are_refused_with_reason():
    # On the CPU, gptq::autogptq_gemm has its own kernel (a fused GEMV for m <= 16), so "auto" takes it;
    # training needs the input gradient, which only the torch backend gives.
    layer, W, b = random_layer(4, 128, 32, 32)
    layer.post_init()
    assert layer.backend.name == "autogptq"
    x = torch.randn(3, 128).half()
    assert rel_error(layer(x), x.double() @ W.t() + b.double()) < 2e-3
    layer.post_init(backend="auto_trainable")
    assert layer.backend.name == "torch"
    for name in ("autogptq", "cuda", "torch"):
        layer.post_init(backend=name)
        assert layer.backend.name == ALIASES.get(name, name)
    for name in ("exllamav2", "exllama", "cutlass"):
        with pytest.raises(ValueError, match=f"backend '{ALIASES.get(name, name)}' cannot run on cpu: needs a CUDA device"):
            layer.post_init(backend=name)


def test_autogptq_kernel_names_map_to_ours():
    assert ALIASES["cuda"] == "autogptq" and ALIASES["cuda-old"] == "autogptq" and ALIASES["triton"] == "autogptq"
    assert ALIASES["exllama"] == "exllamav2"
    assert ALIASES.get("marlin", "marlin") in ("marlin", "exllamav2")  # ours when built, else exllamav2


def test_post_init_model_logs_one_summary_line(caplog):
    model = nn.Sequential(random_layer(4, 128, 64, 32)[0], nn.ReLU(), random_layer(4, 64, 32, 32)[0])
    with caplog.at_level(logging.INFO, logger="gptq"):
        line = post_init_model(model)
    assert line == "gptq: 2 QuantLinear layers -> autogptq (4-bit g32, cpu)"
    assert [r.getMessage() for r in caplog.records] == [line]


# ---- GPU ----------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["autogptq", "exllamav2", "torch"])
@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("act_order", [False, True])
def test_cuda_backends_match_float64(backend, bits, act_order):
    layer, W, b = random_layer(bits, 1024, 512, 128, act_order=act_order, seed=bits)
    layer = layer.cuda()
    layer.post_init(backend=backend)
    assert layer.backend.name == backend
    for m in (1, 3, 17):
        x = torch.randn(m, 1024).half()
        y = layer(x.cuda())
        assert rel_error(y, x.double() @ W.t() + b.double()) < 2e-3, (backend, m)


@pytest.mark.gpu
def test_cuda_auto_prefers_exllamav2_and_logs_the_architecture():
    plain, _, _ = random_layer(4, 256, 64, 64)
    act, _, _ = random_layer(4, 256, 64, 64, act_order=True)
    model = nn.Sequential(plain, act).cuda()
    line = post_init_model(model)
    assert plain.backend.name == "exllamav2" and act.backend.name == "exllamav2"
    major, minor = torch.cuda.get_device_capability()
    assert line.startswith("gptq: 2 QuantLinear layers -> exllamav2 x1 (4-bit g64") and "act-order" in line
    assert f"sm_{major}{minor}" in line


def test_auto_order_is_exllamav2_autogptq_torch_and_never_marlin():
    from gptq.nn.backends import _auto_order

    layer, _, _ = random_layer(4, 128, 32, 32)
    names = [b.name for b in _auto_order(layer)]
    # cutlass keeps a second copy of the weights: by name only, like marlin's layout.
    assert names[:3] == ["exllamav2", "autogptq", "torch"] and "marlin" not in names and "cutlass" not in names


def test_cutlass_ops_have_meta_shapes():
    # torch.compile traces the cutlass backend's ops through their Meta implementations (no GPU needed).
    K, N, G, m = 4096, 11008, 32, 300
    dev = "meta"
    qw = torch.empty(K // 8, N, dtype=torch.int32, device=dev)
    qz = torch.empty(G, N // 8, dtype=torch.int32, device=dev)
    sc = torch.empty(G, N, dtype=torch.bfloat16, device=dev)
    w, z = torch.ops.gptq.cutlass_prepare(qw, qz, sc, 4, 128, 1)
    assert w.shape == (N * K // 8,) and w.dtype == torch.int32 and z.shape == (G, N) and z.dtype == torch.bfloat16
    x = torch.empty(m, K, dtype=torch.bfloat16, device=dev)
    y = torch.ops.gptq.cutlass_gemm(x, qw, qz, sc, None, w, z, 4, 128, 1)
    assert y.shape == (m, N) and y.dtype == torch.bfloat16


def cutlass_usable():
    from gptq.nn.backends import BACKENDS

    layer, _, _ = random_layer(4, 128, 32, 64)
    return BACKENDS["cutlass"].unsupported_reason(layer.cuda(), torch.device("cuda")) is None


@pytest.mark.gpu
@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_cutlass_backend_matches_float64(act_order, dtype):
    # m = 1 runs the exllamav2 kernels; m = 300 CUTLASS's GEMM on the copy made at load, since 10240
    # features make 80 x 2 of its tiles (asserted through the profiler's kernel names). The copy stays out
    # of the state dict, which keeps the checkpoint layout.
    if not cutlass_usable():
        pytest.skip("the cutlass backend needs compute capability 9.0 and a build with the CUTLASS headers")
    K, N = 1024, 10240
    layer, W, b = random_layer(4, K, N, 128, act_order=act_order, dtype=dtype, seed=11)
    layer = layer.cuda()
    layer.post_init(backend="cutlass")
    assert layer.backend.name == "cutlass"
    assert layer._cutlass_weights.numel() == K * N // 8 and layer._cutlass_zeros.dtype == dtype
    assert not any(k.startswith("_cutlass") for k in layer.state_dict())
    tol = 2e-3 if dtype == torch.float16 else 1e-2
    for m in (1, 300):
        x = torch.randn(m, K).to(dtype)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            y = layer(x.cuda())
            torch.cuda.synchronize()
        names = " ".join(e.key for e in prof.key_averages())
        assert ("GemmUniversal" in names) == (m == 300) and "convert_kernel" not in names, names
        assert y.dtype == dtype and rel_error(y, x.double() @ W.t() + b.double()) < tol, (m, dtype, act_order)


@pytest.mark.gpu
def test_cuda_cutlass_backend_refuses_what_its_gemm_cannot_run():
    if not cutlass_usable():
        pytest.skip("the cutlass backend needs compute capability 9.0 and a build with the CUTLASS headers")
    cases = [((3, 1024, 512, 128), "takes 4-bit weights, the layer has 3"),
             ((4, 1024, 520, 128), "needs in_features a multiple of 64 and out_features of 16, the layer has 1024 x 520"),
             ((4, 1024, 512, 32), "needs group_size -1 or a multiple of 64 dividing in_features, the layer has 32")]
    for (bits, K, N, g), why in cases:
        layer = random_layer(bits, K, N, g)[0].cuda()
        with pytest.raises(ValueError, match=f"backend 'cutlass' cannot run on cuda:0: {why}"):
            layer.post_init(backend="cutlass")


@pytest.mark.gpu
def test_cuda_cutlass_backend_compiles_fullgraph_and_captures():
    if not cutlass_usable():
        pytest.skip("the cutlass backend needs compute capability 9.0 and a build with the CUTLASS headers")
    layers = [random_layer(4, 512, 1024, 128, act_order=True, seed=1)[0], nn.SiLU(),
              random_layer(4, 1024, 512, 128, seed=2)[0]]
    model = nn.Sequential(*layers).cuda()
    post_init_model(model, backend="cutlass")
    x = torch.randn(300, 512, device="cuda").half()
    eager = model(x)
    compiled = torch.compile(model, fullgraph=True)
    assert rel_error(compiled(x), eager) < 2e-3
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        model(x)
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(g):
        y = model(x)
    x.copy_(torch.randn_like(x))
    g.replay()
    torch.testing.assert_close(y, model(x), rtol=0, atol=0)


def small_model():
    torch.manual_seed(0)
    layers = [random_layer(4, 512, 1024, 128, act_order=True, seed=1)[0], nn.SiLU(),
              random_layer(4, 1024, 512, 128, seed=2)[0], nn.SiLU(), random_layer(3, 512, 256, 128, seed=3)[0]]
    model = nn.Sequential(*layers).cuda()
    post_init_model(model)
    return model


@pytest.mark.gpu
def test_cuda_torch_compile_fullgraph_matches_eager():
    model = small_model()
    x = torch.randn(2, 512, device="cuda").half()
    eager = model(x)
    compiled = torch.compile(model, fullgraph=True)  # fullgraph: any graph break is an error
    # Inductor may fuse the bias add and SiLU (rounding once instead of twice): fp16-level agreement.
    assert rel_error(compiled(x), eager) < 2e-3
    x1 = torch.randn(1, 512, device="cuda").half()
    assert rel_error(compiled(x1), model(x1)) < 2e-3


@pytest.mark.gpu
def test_cuda_graph_capture_of_the_model_replays_to_the_same_output():
    model = small_model()
    x = torch.randn(1, 512, device="cuda").half()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        model(x)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        y = model(x)
    for _ in range(3):
        x.copy_(torch.randn_like(x))
        g.replay()
        torch.testing.assert_close(y, model(x), rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("m", [1, 17, 64])
def test_marlin_backend_matches_float64_reference(bits, act_order, m):
    """QuantLinear with backend="marlin" (repacked once at post_init for the tensor-core kernel) computes
    the same x W^T + b as the float64 reference, with zero points (random zeros) and act-order."""
    from gptq.nn import BACKENDS

    if "marlin" not in BACKENDS:
        pytest.skip("this build has no marlin ops")
    K, N, g = 1024, 512, 128
    layer, W, b = random_layer(bits, K, N, g, act_order=act_order, seed=bits * 10 + m)
    layer = layer.cuda()
    layer.post_init(backend="marlin")
    assert layer.backend.name == "marlin"
    x = torch.randn(m, K, device="cuda").half()
    y = layer(x)
    ref = x.double().cpu() @ W.t() + b.double()
    assert torch.isfinite(y).all() and rel_error(y, ref) < 2e-3
