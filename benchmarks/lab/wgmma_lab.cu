// Lab for the Hopper GEMM (csrc/kernels/exllamav2/exllamav2_wgmma_sm90a.cu), without torch: a float64
// reference check on random inputs (outputs poisoned first), then timings against fp16 cuBLAS.
//
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Icsrc -Iinclude \
//        benchmarks/lab/wgmma_lab.cu -lcublas -o /tmp/wgmma_lab && /tmp/wgmma_lab [check|bench|all]
//
// The check prints, for a mismatch, where the reference value of a wrong entry sits instead (another
// feature or token), which tells a fragment-mapping error from an arithmetic one.
#include <cublas_v2.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../../csrc/kernels/exllamav2/exllamav2_wgmma_sm90a.cu"

using namespace gptq::cuda;

#define CK(x)                                                                                   \
  do {                                                                                          \
    cudaError_t e_ = (x);                                                                       \
    if (e_ != cudaSuccess) {                                                                    \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__);     \
      std::exit(1);                                                                             \
    }                                                                                           \
  } while (0)

struct Problem {
  int64_t M, K, N, gs;
  bool v1;
};

struct Host {
  std::vector<uint32_t> qw, qz;
  std::vector<__half> sc, x;
};

Host make_host(const Problem& p, std::mt19937& rng) {
  Host h;
  const int64_t G = p.gs < 0 ? 1 : (p.K + p.gs - 1) / p.gs;
  h.qw.resize(p.K / 8 * p.N);
  h.qz.resize(G * (p.N / 8));
  h.sc.resize(G * p.N);
  h.x.resize(p.M * p.K);
  std::uniform_int_distribution<uint32_t> u32;
  std::normal_distribution<float> nd(0.f, 1.f);
  for (auto& v : h.qw) v = u32(rng);
  for (auto& v : h.qz) v = u32(rng);
  for (auto& v : h.sc) v = __float2half(0.002f + 0.01f * std::fabs(nd(rng)));
  for (auto& v : h.x) v = __float2half(nd(rng));
  return h;
}

// y[m][n] = sum_k x[m][k] * s[g][n] * (q[k][n] - z[g][n]) in float64.
std::vector<double> reference(const Problem& p, const Host& h) {
  const int64_t M = p.M, K = p.K, N = p.N;
  std::vector<double> w(K * N);
  for (int64_t k = 0; k < K; ++k) {
    const int64_t g = p.gs < 0 ? 0 : k / p.gs;
    for (int64_t n = 0; n < N; ++n) {
      const int q = (h.qw[(k / 8) * N + n] >> (4 * (k % 8))) & 15;
      int z = (h.qz[g * (N / 8) + n / 8] >> (4 * (n % 8))) & 15;
      if (p.v1) z = (z + 1) & 15;
      w[k * N + n] = double(__half2float(h.sc[g * N + n])) * (q - z);
    }
  }
  std::vector<double> y(M * N, 0.0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) {
      const double xv = __half2float(h.x[m * K + k]);
      const double* wr = &w[k * N];
      double* yr = &y[m * N];
      for (int64_t n = 0; n < N; ++n) yr[n] += xv * wr[n];
    }
  return y;
}

struct Dev {
  __half *x = nullptr, *sc = nullptr, *out = nullptr;
  uint32_t *qw = nullptr, *qz = nullptr;
  float* partial = nullptr;
  int* counters = nullptr;
  void* ws = nullptr;
};

template <class T>
T* upload(const std::vector<T>& v) {
  T* d = nullptr;
  CK(cudaMalloc(&d, v.size() * sizeof(T)));
  CK(cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

GemvArgs args_for(const Problem& p, const Dev& d) {
  GemvArgs a;
  a.x = d.x;
  a.qweight = d.qw;
  a.qzeros = d.qz;
  a.scales = d.sc;
  a.out = d.out;
  a.partial = d.partial;
  a.counters = d.counters;
  a.workspace = d.ws;
  a.M = p.M;
  a.K = p.K;
  a.N = p.N;
  a.group_size = p.gs;
  a.zeros_minus_one = p.v1;
  return a;
}

GemvDevice device() {
  GemvDevice dev;
  CK(cudaDeviceGetAttribute(&dev.sm_count, cudaDevAttrMultiProcessorCount, 0));
  if (const char* e = std::getenv("GPTQ_GEMV_MAX_SPLITS")) dev.max_splits = std::atoll(e);
  return dev;
}

bool check(const Problem& p, std::mt19937& rng) {
  const Host h = make_host(p, rng);
  const auto ref = reference(p, h);
  Dev d;
  d.x = upload(h.x);
  d.qw = upload(h.qw);
  d.qz = upload(h.qz);
  d.sc = upload(h.sc);
  const GemvPlan plan = exllamav2_wgmma_plan(p.M, p.K, p.N, device());
  CK(cudaMalloc(&d.out, p.M * p.N * 2));
  CK(cudaMemset(d.out, 0xFF, p.M * p.N * 2));  // NaN
  CK(cudaMalloc(&d.partial, std::max<int64_t>(1, plan.splits * p.M * p.N) * 4));
  CK(cudaMalloc(&d.counters, std::max<int64_t>(1, plan.col_blocks) * 4));
  CK(cudaMemset(d.counters, 0, std::max<int64_t>(1, plan.col_blocks) * 4));
  CK(cudaMalloc(&d.ws, plan.workspace_bytes));
  bool ok = true;
  for (int rep = 0; rep < 2 && ok; ++rep) {  // twice: the counters must be left at zero
    CK(launch_exllamav2_wgmma(args_for(p, d), plan, 0));
    CK(cudaDeviceSynchronize());
    std::vector<__half> out(p.M * p.N);
    CK(cudaMemcpy(out.data(), d.out, out.size() * 2, cudaMemcpyDeviceToHost));
    double num = 0, den = 0;
    int shown = 0;
    for (int64_t i = 0; i < p.M * p.N; ++i) {
      const double o = __half2float(out[i]), r = ref[i];
      num += (o - r) * (o - r);
      den += r * r;
      if (!(std::fabs(o - r) <= 1e-2 * (1 + std::fabs(r))) && shown < 6) {
        ++shown;
        const int64_t m = i / p.N, n = i % p.N;
        std::string where;
        for (int64_t j = 0; j < p.M * p.N && where.size() < 60; ++j)
          if (std::fabs(ref[j] - o) <= 1e-3 * (1 + std::fabs(o)))
            where += " (" + std::to_string(j / p.N) + "," + std::to_string(j % p.N) + ")";
        std::printf("    m=%lld n=%lld got %.5f ref %.5f; got equals ref at%s\n", (long long)m, (long long)n, o, r,
                    where.empty() ? " nowhere" : where.c_str());
      }
    }
    const double rel = std::sqrt(num / std::max(den, 1e-300));
    ok = rel < 2e-3;
    std::printf("check M=%lld K=%lld N=%lld g=%lld v1=%d bt=%d splits=%lld rep=%d: rel err %.3g %s\n",
                (long long)p.M, (long long)p.K, (long long)p.N, (long long)p.gs, p.v1, plan.batch,
                (long long)plan.splits, rep, rel, ok ? "ok" : "FAIL");
  }
  cudaFree(d.x); cudaFree(d.qw); cudaFree(d.qz); cudaFree(d.sc); cudaFree(d.out); cudaFree(d.partial);
  cudaFree(d.counters); cudaFree(d.ws);
  return ok;
}

// Median time of `reps` calls of f over `copies` rotating weight copies (beyond the 50 MB L2).
template <class F>
float time_us(F f, int copies, int reps = 30) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  for (int i = 0; i < copies; ++i) f(i);
  std::vector<float> t;
  for (int r = 0; r < 5; ++r) {
    CK(cudaEventRecord(a));
    for (int i = 0; i < reps; ++i) f(i % copies);
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(1000.f * ms / reps);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void bench(int64_t K, int64_t N, const std::vector<int64_t>& ms, cublasHandle_t blas) {
  std::mt19937 rng(7);
  const int64_t gs = 128, G = K / gs;
  const int64_t wbytes = K / 8 * N * 4 + G * N * 2 + G * N / 2;
  const int copies = static_cast<int>(std::max<int64_t>(2, 300'000'000 / (K * N * 2) + 1));
  const int qcopies = static_cast<int>(std::max<int64_t>(2, 300'000'000 / wbytes + 1));
  std::vector<uint32_t*> qw(qcopies), qz(qcopies);
  std::vector<__half*> sc(qcopies), wf(copies);
  std::vector<uint32_t> hq(K / 8 * N);
  for (auto& v : hq) v = rng();
  std::vector<__half> hs(G * N, __float2half(0.01f));
  std::vector<uint32_t> hz(G * N / 8, 0x88888888u);
  for (int i = 0; i < qcopies; ++i) {
    qw[i] = upload(hq);
    qz[i] = upload(hz);
    sc[i] = upload(hs);
  }
  for (int i = 0; i < copies; ++i) {
    CK(cudaMalloc(&wf[i], K * N * 2));
    CK(cudaMemset(wf[i], 0, K * N * 2));
  }
  for (int64_t M : ms) {
    std::vector<__half> hx(M * K, __float2half(0.5f));
    __half* x = upload(hx);
    __half* out = nullptr;
    CK(cudaMalloc(&out, M * N * 2));
    const GemvPlan plan = exllamav2_wgmma_plan(M, K, N, device());
    float* partial = nullptr;
    int* counters = nullptr;
    void* ws = nullptr;
    CK(cudaMalloc(&partial, std::max<int64_t>(1, plan.splits * M * N) * 4));
    CK(cudaMalloc(&counters, plan.col_blocks * 4));
    CK(cudaMemset(counters, 0, plan.col_blocks * 4));
    CK(cudaMalloc(&ws, plan.workspace_bytes));
    Problem p{M, K, N, gs, false};
    Dev d;
    d.x = x;
    d.out = out;
    d.partial = partial;
    d.counters = counters;
    d.ws = ws;
    const float tq = time_us(
        [&](int i) {
          d.qw = qw[i];
          d.qz = qz[i];
          d.sc = sc[i];
          CK(launch_exllamav2_wgmma(args_for(p, d), plan, 0));
        },
        qcopies);
    const __half one = __float2half(1.f), zero = __float2half(0.f);
    const float tf = time_us(
        [&](int i) {
          // y^T [N, M] = W^T [N, K] x^T [K, M], W [K, N] row-major = column-major [N, K]^T.
          cublasStatus_t st = cublasGemmEx(blas, CUBLAS_OP_N, CUBLAS_OP_N, int(N), int(M), int(K), &one, wf[i],
                                           CUDA_R_16F, int(N), x, CUDA_R_16F, int(K), &zero, out, CUDA_R_16F,
                                           int(N), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
          if (st != CUBLAS_STATUS_SUCCESS) std::printf("cublas error %d\n", int(st));
        },
        copies);
    const double tb = double(wbytes) / (tq * 1e-6) / 1e12;
    const double tflops = 2.0 * M * K * N / (tq * 1e-6) / 1e12;
    std::printf("bench %6lldx%-6lld m=%-5lld bt=%-3d splits=%-2lld wgmma %8.1f us %5.2f TB/s %6.1f TFLOP/s | fp16 %8.1f us | x%.2f\n",
                (long long)K, (long long)N, (long long)M, plan.batch, (long long)plan.splits, tq, tb, tflops, tf,
                tf / tq);
    cudaFree(x); cudaFree(out); cudaFree(partial); cudaFree(counters); cudaFree(ws);
  }
  for (int i = 0; i < qcopies; ++i) { cudaFree(qw[i]); cudaFree(qz[i]); cudaFree(sc[i]); }
  for (int i = 0; i < copies; ++i) cudaFree(wf[i]);
}

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "all";
  int failures = 0;
  if (mode == "check" || mode == "all") {
    std::mt19937 rng(1234);
    const Problem problems[] = {
        {16, 128, 256, 128, false},   {1, 128, 256, -1, false},    {3, 256, 512, 32, false},
        {17, 512, 264, 64, true},     {64, 1024, 1024, 128, false}, {100, 2048, 520, 256, true},
        {128, 4096, 512, 128, false}, {129, 1032, 776, 32, false},  {300, 4096, 1024, 128, false},
        {5, 11008, 512, 128, true},   {33, 4160, 264, 512, false},
    };
    for (const auto& p : problems) failures += !check(p, rng);
  }
  if (mode == "prof") {  // prof K N M: a few calls of one shape, for Nsight Compute
    const int64_t K = std::atoll(argv[2]), N = std::atoll(argv[3]);
    cublasHandle_t blas;
    cublasCreate(&blas);
    bench(K, N, {std::atoll(argv[4])}, blas);
    cublasDestroy(blas);
    return 0;
  }
  if (mode == "quick") {
    cublasHandle_t blas;
    cublasCreate(&blas);
    bench(8192, 28672, {16, 64, 256, 1024}, blas);
    bench(28672, 8192, {16, 64}, blas);
    bench(8192, 8192, {16, 64}, blas);
    cublasDestroy(blas);
    return 0;
  }
  if (mode == "bench" || mode == "all") {
    cublasHandle_t blas;
    cublasCreate(&blas);
    bench(8192, 28672, {16, 32, 64, 128, 256, 1024, 4096}, blas);
    bench(28672, 8192, {16, 64, 256, 1024}, blas);
    bench(8192, 8192, {16, 64, 256, 1024}, blas);
    bench(4096, 4096, {16, 64, 256, 1024}, blas);
    bench(4096, 11008, {16, 64, 256}, blas);
    bench(11008, 4096, {16, 64, 256}, blas);
    cublasDestroy(blas);
  }
  std::printf("failures: %d\n", failures);
  return failures != 0;
}
