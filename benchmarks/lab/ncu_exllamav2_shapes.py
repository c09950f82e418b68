# Calls the exllamav2 op at m = 1 and 16 on the six benchmark shapes (4-bit g128), 3 calls each, for
# Nsight Compute, e.g.
#   ncu --kernel-name regex:"exllamav2|wgmma|stage_x" --metrics gpu__time_duration.sum,dram__bytes_read.sum,\
#       launch__grid_size,launch__waves_per_multiprocessor,sm__cycles_active.avg,gpc__cycles_elapsed.max \
#       python3 benchmarks/lab/ncu_exllamav2_shapes.py
# Random packed words are uniformly random 4-bit codes; the values do not matter for timing.
import torch, gptq  # noqa: F401
for K, N in ((4096, 4096), (8192, 8192), (4096, 11008), (11008, 4096), (8192, 28672), (28672, 8192)):
    qw = torch.randint(-2**31, 2**31 - 1, (K // 8, N), dtype=torch.int32, device="cuda")
    qz = torch.randint(-2**31, 2**31 - 1, (K // 128, N // 8), dtype=torch.int32, device="cuda")
    sc = (torch.rand(K // 128, N, device="cuda") * 0.02).half()
    for m in (1, 16):
        x = torch.randn(m, K, device="cuda").half()
        for _ in range(3):
            torch.ops.gptq.exllamav2_gemm(x, qw, qz, sc, None, 4, 128, 2)
    torch.cuda.synchronize()
