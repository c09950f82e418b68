// Lab: CUTLASS's Hopper mixed-input GEMM (int4 weights x fp16 activations, group scales and zero points,
// from the nvidia-cutlass wheel on PyPI) on the issue's layer shapes at m = 64..4096, against fp16 cuBLAS
// in the same process. Question it answers: would a CUTLASS-built kernel reach the large-m targets
// (m = 256 at 1.2x fp16, m >= 1024 at 0.9x) where our own Hopper GEMM does not?
//
// One configuration a binary (chosen with -DLAB_CFG=n) so that the device compiles them in parallel:
//   CUTLASS=<wheel>/cutlass_library/source
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr \
//        -I$CUTLASS/include -I$CUTLASS/tools/util/include -DLAB_CFG=0 \
//        benchmarks/lab/cutlass_mixed_lab.cu -lcublas -o /tmp/cm0 && /tmp/cm0
//
// The GEMM is transposed as in our Hopper GEMM: features are CUTLASS's M (the narrow operand A, K-major,
// which is the checkpoint's qweight transposed), tokens its N (x, K-major), and the output [tokens][features]
// is D column-major. Weights are w = q * s + z' with z' = -z * s (CUTLASS's scale-with-zero mode), or,
// for the symmetric variant, signed int4 q - 8 times s (scale-only mode).
//
// Check: relative Frobenius error against cuBLAS on the dequantized fp16 weights (both accumulate in
// fp32; the fp16 rounding of z' is the only difference in the arithmetic, about 2^-12 |z s| a weight).
#include <cublas_v2.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/util/mixed_dtype_utils.hpp"
#include "cutlass/util/packed_stride.hpp"

using namespace cute;

#define CK(x)                                                                               \
  do {                                                                                      \
    cudaError_t e_ = (x);                                                                   \
    if (e_ != cudaSuccess) {                                                                \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
      std::exit(1);                                                                         \
    }                                                                                       \
  } while (0)

#ifndef LAB_CFG
#define LAB_CFG 0
#endif

// Configurations: tile (features x tokens x 64 channels), schedule, zero points or symmetric, scheduler.
using Coop = cutlass::gemm::KernelTmaWarpSpecializedCooperative;
using Ping = cutlass::gemm::KernelTmaWarpSpecializedPingpong;
using CoopEpi = cutlass::epilogue::TmaWarpSpecializedCooperative;
using PingEpi = cutlass::epilogue::TmaWarpSpecialized;
#if LAB_CFG == 0
using TileShape = Shape<_128, _128, _64>; using Sched = Coop; using EpiSched = CoopEpi; constexpr bool kZero = true;
using TileSched = void; static const char* kName = "coop128x128 zero";
#elif LAB_CFG == 1
using TileShape = Shape<_128, _256, _64>; using Sched = Coop; using EpiSched = CoopEpi; constexpr bool kZero = true;
using TileSched = void; static const char* kName = "coop128x256 zero";
#elif LAB_CFG == 2
using TileShape = Shape<_64, _128, _64>; using Sched = Ping; using EpiSched = PingEpi; constexpr bool kZero = true;
using TileSched = void; static const char* kName = "ping64x128 zero";
#elif LAB_CFG == 3
using TileShape = Shape<_128, _128, _64>; using Sched = Coop; using EpiSched = CoopEpi; constexpr bool kZero = false;
using TileSched = void; static const char* kName = "coop128x128 sym";
#elif LAB_CFG == 4
using TileShape = Shape<_128, _128, _64>; using Sched = Coop; using EpiSched = CoopEpi; constexpr bool kZero = true;
using TileSched = cutlass::gemm::StreamKScheduler; static const char* kName = "coop128x128 zero streamk";
#elif LAB_CFG == 5
using TileShape = Shape<_128, _64, _64>; using Sched = Coop; using EpiSched = CoopEpi; constexpr bool kZero = true;
using TileSched = void; static const char* kName = "coop128x64 zero";
#elif LAB_CFG == 6
using TileShape = Shape<_64, _256, _64>; using Sched = Ping; using EpiSched = PingEpi; constexpr bool kZero = true;
using TileSched = void; static const char* kName = "ping64x256 zero";
#endif

using Mma = cutlass::half_t;
using Quant = std::conditional_t<kZero, cutlass::uint4b_t, cutlass::int4b_t>;
using LayoutW = cutlass::layout::RowMajor;     // features x K, K contiguous
using LayoutX = cutlass::layout::ColumnMajor;  // K x tokens, K contiguous
using LayoutOut = cutlass::layout::ColumnMajor;  // features x tokens, features contiguous
using StrideW = cutlass::detail::TagToStrideA_t<LayoutW>;
using StrideX = cutlass::detail::TagToStrideB_t<LayoutX>;

// Values a thread reads for one wgmma placed next to each other, nibbles in the order 0,2,4,6,1,3,5,7.
using ValueShuffle = Layout<Shape<_2, _4>, Stride<_4, _1>>;
using LayoutAtomQuant =
    decltype(cutlass::compute_memory_reordering_atom<Mma, Layout<Shape<_1, _1>>, ValueShuffle>());
using LayoutWReordered = decltype(cute::tile_to_shape(LayoutAtomQuant{}, Layout<Shape<int, int, int>, StrideW>{}));

using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, Shape<_1, _1, _1>,
    cutlass::epilogue::collective::EpilogueTileAuto, float, float, void, LayoutOut, 8, Mma, LayoutOut, 8,
    EpiSched>::CollectiveOp;

using WeightOperand = std::conditional_t<kZero, cute::tuple<Quant, Mma, Mma>, cute::tuple<Quant, Mma>>;
using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, WeightOperand, LayoutWReordered, 32, Mma, LayoutX, 8,
    float, TileShape, Shape<_1, _1, _1>,
    cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
    Sched>::CollectiveOp;

using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue, TileSched>;
using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
using StrideS = typename Mainloop::StrideScale;
using StrideD = typename Kernel::StrideD;

// Dequantize W^T (features x K, K-major, logical nibble order) to fp16 for the cuBLAS reference.
__global__ void dequant_kernel(const uint8_t* q, const half* s, const half* z, half* w, int n, int k, int gs) {
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= int64_t(n) * k) return;
  int f = int(i / k), c = int(i % k);
  int v = (q[i / 2] >> ((i & 1) * 4)) & 15;
  int g = c / gs;
  float sc = __half2float(s[int64_t(g) * n + f]);
  float r;
  if (kZero) r = float(v) * sc + __half2float(z[int64_t(g) * n + f]);  // the same z' the kernel adds
  else r = float(v - 8) * sc;  // the kernel reads the signed nibble v ^ 8, which is v - 8
  w[i] = __float2half(r);
}

static float median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int main() {
  cublasHandle_t h;
  cublasCreate(&h);
  cudaStream_t st;
  CK(cudaStreamCreate(&st));
  cublasSetStream(h, st);
  const int gs = 128;
  struct Shape2 { int k, n; };
  const Shape2 shapes[] = {{4096, 4096}, {8192, 8192}, {4096, 11008}, {11008, 4096}, {8192, 28672}, {28672, 8192}};
  const int ms[] = {64, 256, 1024, 4096};
  std::printf("# %s, group %d; times in us (median of 7 batches of 20 calls, weights rotated beyond L2)\n", kName, gs);
  std::printf("%-10s %6s %6s %10s %10s %8s %10s %10s\n", "cfg", "k", "n", "m", "cutlass", "fp16", "ratio", "rel_err");
  std::mt19937 rng(1234);
  for (auto sh : shapes) {
    const int K = sh.k, N = sh.n, G = K / gs;
    const size_t qbytes = size_t(N) * K / 2;
    // weights: random nibbles, scales in [0.5, 1.5] / 64, zero points 0..15 (z' = -z s) or 8 (symmetric)
    std::vector<uint8_t> hq(qbytes);
    for (auto& b : hq) b = uint8_t(rng());
    std::vector<half> hs(size_t(G) * N), hz(size_t(G) * N);
    std::vector<float> zf(size_t(G) * N);
    for (size_t i = 0; i < hs.size(); ++i) {
      float s = (0.5f + (rng() % 1000) / 1000.f) / 64.f;
      int z = kZero ? int(rng() % 16) : 8;
      hs[i] = __float2half(s);
      hz[i] = __float2half(-float(z) * __half2float(hs[i]));
    }
    // Copies of the weights beyond the 50 MB L2 for the rotation.
    const int rot = std::max(2, int((256ull << 20) / qbytes) + 1);
    const int rot16 = std::max(2, int((256ull << 20) / (size_t(N) * K * 2)) + 1);
    std::vector<uint8_t*> dq(rot);
    std::vector<half*> ds(rot), dz(rot);
    uint8_t* dq_logical;
    CK(cudaMalloc(&dq_logical, qbytes));
    CK(cudaMemcpy(dq_logical, hq.data(), qbytes, cudaMemcpyHostToDevice));
    // The symmetric variant's signed nibbles: v ^ 8 is the two's-complement int4 of v - 8.
    if (!kZero) {
      std::vector<uint8_t> hx(qbytes);
      for (size_t i = 0; i < qbytes; ++i) hx[i] = hq[i] ^ 0x88;
      CK(cudaMemcpy(dq_logical, hx.data(), qbytes, cudaMemcpyHostToDevice));
    }
    auto shape_w = make_shape(N, K, 1);
    StrideW stride_w = cutlass::make_cute_packed_stride(StrideW{}, shape_w);
    auto layout_w = make_layout(shape_w, stride_w);
    LayoutWReordered layout_wr = cute::tile_to_shape(LayoutAtomQuant{}, shape_w);
    for (int r = 0; r < rot; ++r) {
      CK(cudaMalloc(&dq[r], qbytes));
      cutlass::reorder_tensor(reinterpret_cast<const Quant*>(dq_logical), layout_w,
                              reinterpret_cast<Quant*>(dq[r]), layout_wr);
      CK(cudaMalloc(&ds[r], hs.size() * 2));
      CK(cudaMalloc(&dz[r], hz.size() * 2));
      CK(cudaMemcpy(ds[r], hs.data(), hs.size() * 2, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(dz[r], hz.data(), hz.size() * 2, cudaMemcpyHostToDevice));
    }
    // fp16 reference weights W^T [N][K] (from the logical, un-reordered nibbles), rotated too.
    std::vector<half*> dw(rot16);
    {
      uint8_t* dq_plain;
      CK(cudaMalloc(&dq_plain, qbytes));
      CK(cudaMemcpy(dq_plain, hq.data(), qbytes, cudaMemcpyHostToDevice));
      for (int r = 0; r < rot16; ++r) {
        CK(cudaMalloc(&dw[r], size_t(N) * K * 2));
        int64_t tot = int64_t(N) * K;
        dequant_kernel<<<unsigned((tot + 255) / 256), 256, 0, st>>>(dq_plain, ds[0], dz[0], dw[r], N, K, gs);
      }
      CK(cudaStreamSynchronize(st));
      CK(cudaFree(dq_plain));
    }
    for (int m : ms) {
      half *dx, *dout, *dref;
      CK(cudaMalloc(&dx, size_t(m) * K * 2));
      CK(cudaMalloc(&dout, size_t(m) * N * 2));
      CK(cudaMalloc(&dref, size_t(m) * N * 2));
      {
        std::vector<half> hx(size_t(m) * K);
        std::normal_distribution<float> nd(0.f, 1.f);
        for (auto& v : hx) v = __float2half(nd(rng));
        CK(cudaMemcpy(dx, hx.data(), hx.size() * 2, cudaMemcpyHostToDevice));
      }
      CK(cudaMemset(dout, 0xff, size_t(m) * N * 2));  // poison: NaN
      StrideX stride_x = cutlass::make_cute_packed_stride(StrideX{}, make_shape(m, K, 1));
      StrideD stride_d = cutlass::make_cute_packed_stride(StrideD{}, make_shape(N, m, 1));
      StrideS stride_s = cutlass::make_cute_packed_stride(StrideS{}, make_shape(N, G, 1));
      auto make_args = [&](int r) {
        typename Gemm::Arguments a;
        if constexpr (kZero) {
          a = typename Gemm::Arguments{
              cutlass::gemm::GemmUniversalMode::kGemm,
              {N, m, K, 1},
              {reinterpret_cast<Quant*>(dq[r]), layout_wr, reinterpret_cast<Mma*>(dx), stride_x,
               reinterpret_cast<Mma*>(ds[r]), stride_s, gs, reinterpret_cast<Mma*>(dz[r])},
              {{1.f, 0.f}, nullptr, stride_d, reinterpret_cast<Mma*>(dout), stride_d}};
        } else {
          a = typename Gemm::Arguments{
              cutlass::gemm::GemmUniversalMode::kGemm,
              {N, m, K, 1},
              {reinterpret_cast<Quant*>(dq[r]), layout_wr, reinterpret_cast<Mma*>(dx), stride_x,
               reinterpret_cast<Mma*>(ds[r]), stride_s, gs},
              {{1.f, 0.f}, nullptr, stride_d, reinterpret_cast<Mma*>(dout), stride_d}};
        }
        return a;
      };
      std::vector<Gemm> gemms(rot);
      size_t ws = Gemm::get_workspace_size(make_args(0));
      void* dws = nullptr;
      if (ws) CK(cudaMalloc(&dws, ws));
      bool ok = true;
      for (int r = 0; r < rot; ++r) {
        auto a = make_args(r);
        if (gemms[r].can_implement(a) != cutlass::Status::kSuccess ||
            gemms[r].initialize(a, dws, st) != cutlass::Status::kSuccess) {
          ok = false;
          break;
        }
      }
      if (!ok) {
        std::printf("%-10s %6d %6d %10d  cannot implement\n", "cutlass", K, N, m);
        continue;
      }
      CK(gemms[0].run(st) == cutlass::Status::kSuccess ? cudaSuccess : cudaErrorUnknown);
      // reference: out[m][N] = x[m][K] . W^T[N][K]^T, column-major view: out^T (N x m) = W^T x^T
      const float one = 1.f, zero = 0.f;
      cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, N, m, K, &one, dw[0], CUDA_R_16F, K, dx, CUDA_R_16F, K, &zero, dref,
                   CUDA_R_16F, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
      CK(cudaStreamSynchronize(st));
      std::vector<half> ho(size_t(m) * N), hr(size_t(m) * N);
      CK(cudaMemcpy(ho.data(), dout, ho.size() * 2, cudaMemcpyDeviceToHost));
      CK(cudaMemcpy(hr.data(), dref, hr.size() * 2, cudaMemcpyDeviceToHost));
      double num = 0, den = 0;
      for (size_t i = 0; i < ho.size(); ++i) {
        double a = __half2float(ho[i]), b = __half2float(hr[i]);
        num += (a - b) * (a - b);
        den += b * b;
      }
      double rel = std::sqrt(num / den);  // NaN if any output stayed poisoned
      cudaEvent_t e0, e1;
      cudaEventCreate(&e0);
      cudaEventCreate(&e1);
      auto time = [&](auto&& call) {
        for (int i = 0; i < 5; ++i) call(i);
        std::vector<float> t;
        for (int b = 0; b < 7; ++b) {
          cudaEventRecord(e0, st);
          for (int i = 0; i < 20; ++i) call(b * 20 + i);
          cudaEventRecord(e1, st);
          CK(cudaEventSynchronize(e1));
          float ms_ = 0;
          cudaEventElapsedTime(&ms_, e0, e1);
          t.push_back(ms_ * 1000.f / 20.f);
        }
        return median(t);
      };
      float tc = time([&](int i) { gemms[i % rot].run(st); });
      float tf = time([&](int i) {
        cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, N, m, K, &one, dw[i % rot16], CUDA_R_16F, K, dx, CUDA_R_16F, K,
                     &zero, dref, CUDA_R_16F, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
      });
      CK(cudaGetLastError());
      std::printf("%-10s %6d %6d %10d %10.1f %8.1f %10.2f %10.2e   ws=%zu\n", "cutlass", K, N, m, tc, tf, tf / tc, rel,
                  ws);
      std::fflush(stdout);
      cudaFree(dx);
      cudaFree(dout);
      cudaFree(dref);
      if (dws) cudaFree(dws);
    }
    for (int r = 0; r < rot; ++r) cudaFree(dq[r]), cudaFree(ds[r]), cudaFree(dz[r]);
    for (int r = 0; r < rot16; ++r) cudaFree(dw[r]);
    cudaFree(dq_logical);
  }
  return 0;
}
