# CUTLASS path: eager (events around a loop) against a CUDA graph of the same loop, rotated weights.
import sys, torch, gptq
sys.path.insert(0, "tests/python")
from test_kernel_gemm import make_layer
def timeit(fn, reps=5):
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(True), torch.cuda.Event(True)
        a.record(); fn(); b.record(); torch.cuda.synchronize(); ts.append(a.elapsed_time(b) * 1000)
    ts.sort(); return ts[len(ts) // 2]
for K, N in [(4096, 4096), (8192, 8192), (11008, 4096), (8192, 28672)]:
    for m in [1024]:
        L0, _ = make_layer(4, K, N, 128, device="cuda", seed=1)
        copies = max(2, (256 << 20) // (K * N // 2) + 1)
        Ls = [{k: (v.clone() if torch.is_tensor(v) else v) for k, v in L0.items()} for _ in range(copies)]
        x = torch.randn(m, K, device="cuda").half()
        R = 24
        def loop():
            for i in range(R):
                L = Ls[i % copies]
                torch.ops.gptq.exllamav2_gemm(x, L["qweight"], L["qzeros"], L["scales"], None, 4, 128, 1)
        loop(); torch.cuda.synchronize()
        te = timeit(loop) / R
        g = torch.cuda.CUDAGraph()
        s = torch.cuda.Stream()
        with torch.cuda.stream(s):
            loop()
            torch.cuda.synchronize()
            with torch.cuda.graph(g):
                loop()
        torch.cuda.synchronize()
        tg = timeit(g.replay) / R
        w = torch.randn(N, K, device="cuda").half()
        ws = [w.clone() for _ in range(max(2, (256 << 20) // (K * N * 2) + 1))]
        def floop():
            for i in range(R): torch.matmul(x, ws[i % len(ws)].t())
        floop(); tf = timeit(floop) / R
        print(f"{K}x{N} m={m}: eager {te:.1f} us, graph {tg:.1f} us, fp16 eager {tf:.1f} us", flush=True)
