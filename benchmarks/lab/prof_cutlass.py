# Per-kernel GPU times of the exllamav2 op on the CUTLASS path (torch profiler), to split conversion and GEMM.
import sys, torch, gptq
sys.path.insert(0, "tests/python")
from test_kernel_gemm import make_layer
for K, N in [(4096, 4096), (8192, 8192), (8192, 28672)]:
    for m in [256, 1024, 4096]:
        L, W = make_layer(4, K, N, 128, device="cuda", seed=1)
        x = torch.randn(m, K, device="cuda").half()
        f = lambda: torch.ops.gptq.exllamav2_gemm(x, L["qweight"], L["qzeros"], L["scales"], None, 4, 128, 1)
        for _ in range(3): f()
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(10): f()
            torch.cuda.synchronize()
        parts = []
        for e in prof.key_averages():
            if e.device_type == torch.autograd.DeviceType.CUDA or getattr(e, "device_time", 0) > 0:
                t = getattr(e, "device_time", None) or getattr(e, "cuda_time", 0)
                parts.append(f"{e.key[:40]}={t:.1f}us x{e.count}")
        print(K, N, m, " | ".join(parts), flush=True)
