// 3-bit GEMV in half2 for M = 1..4 rows of fp16 activations, over the checkpoint layout as stored
// (qweight [K*3/32, N]: every 3 consecutive words of a column hold 32 input channels, value j at
// bits 3j..3j+2 of the 96-bit run w0 | w1 << 32 | w2 << 64).
//
// Why a separate kernel: the general AutoGPTQ-style kernel decodes one weight per LOP3 into fp32 and
// spends FADD + FFMA on it, which at 3 bits leaves it compute-bound near 45% of the copy bandwidth.
// Here two weights come out of one LOP3 as the half2 (1024 + v 2^P), like the 4-bit ExLlamaV2 path.
// That needs the two fields of a pair at the same bit offset P <= 7 of the two 16-bit halves of a
// word: autogptq_decode3.cuh joins the halves of the 96-bit run so (decode3::period_pairs).
// Every pair is (v_j, v_j+16), so the x pairs are (x_j, x_j+16): one PRMT each from x's words.
// One HFMA2 with the constants 2^-(P+4) and -2^(6-P) turns (1024 + v 2^P) into v/16 exactly; the zero
// point is applied per batch in fp32 as sum x (v - z) = sum x v - z sum x. sum x must be fp32: z sum x
// cancels much of sum x v, and an fp16 sum x (rounded at the size of an outlier channel) raised the
// error of 2000-sigma outlier inputs to 2.4e-3 on the H100. The warp's lanes share it: lane l adds
// x's word l % 16 of the period and four shuffles complete the sum in every lane.
//
// Work split, double buffering and the split-K epilogue are those of the ExLlamaV2-style GEMV
// (csrc/kernels/exllamav2, csrc/common/gemv.cuh), with a batch of PERIODS x 3 packed rows.
#include "autogptq_launch.h"

#include "autogptq_decode3.cuh"
#include "common/gemv.cuh"

namespace gptq::cuda {
namespace {

using gemv::and_or;
using gemv::as_half2;
using gemv::kColsPerBlock;
using gemv::kThreads;
using gemv::kWarps;
using gemv::load_stream;

// v/16 for the 3-bit field at bit P of both halves of w: (1024 + v 2^P) 2^-(P+4) - 2^(6-P).
struct Sixteenths {
  template <int P>
  static __device__ __forceinline__ __half2 get(uint32_t w) {
    constexpr uint32_t kMulH = uint32_t(11 - P) << 10;             // 2^-(P+4) as fp16 bits
    constexpr uint32_t kAddH = 0x8000u | (uint32_t(21 - P) << 10);  // -2^(6-P) as fp16 bits
    return __hfma2(decode3::biased<P>(w), as_half2(kMulH | (kMulH << 16)), as_half2(kAddH | (kAddH << 16)));
  }
};

template <int M, int PERIODS>
__global__ void __launch_bounds__(kThreads) gemv3_kernel(GemvArgs a) {
  constexpr int kRows = 3 * PERIODS;  // packed rows per batch
  __shared__ float red[kWarps][M][kColsPerBlock];
  __shared__ int last_flag;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t N = a.N;
  const int64_t n0 = int64_t(blockIdx.x) * kColsPerBlock + lane * 4;
  const int periods = static_cast<int>(a.K / 32);
  const int batches = (periods + PERIODS - 1) / PERIODS;
  const int b_begin = static_cast<int>(blockIdx.y) * a.batches_per_split;
  const int b_end = min(batches, b_begin + a.batches_per_split);
  const int periods_per_group = a.group_size < 0 ? max(periods, 1) : static_cast<int>(a.group_size / 32);
  const decode3::Quad quad(n0);
  const uint32_t* x32 = reinterpret_cast<const uint32_t*>(a.x);  // x row m, word i: x32[m * K/2 + i]

  float acc[M][4];
#pragma unroll
  for (int m = 0; m < M; ++m)
#pragma unroll
    for (int c = 0; c < 4; ++c) acc[m][c] = 0.f;

  // Every lane runs the loop (lanes past N load nothing): the x sums are shuffled across the warp.
  const bool col_ok = n0 < N;
  // The warp's first two batches into L2 while the kernel before may still run (common/pdl.cuh).
  if (col_ok) {
    for (int b = b_begin + warp; b < min(b_end, b_begin + warp + 2 * kWarps); b += kWarps)
#pragma unroll
      for (int u = 0; u < kRows; ++u)
        if (b * kRows + u < 3 * periods) pdl::prefetch_l2(a.qweight + int64_t(b * kRows + u) * N + n0);
  }
  pdl::wait();
  pdl::launch_dependents();
  {
    uint4 next_w[kRows];
    decode3::Group next_g;
    auto fetch = [&](int b) {
      const int r0 = b * kRows;
#pragma unroll
      for (int u = 0; u < kRows; ++u)
        next_w[u] = col_ok && r0 + u < 3 * periods ? load_stream(a.qweight + int64_t(r0 + u) * N + n0)
                                                   : make_uint4(0, 0, 0, 0);
      next_g = decode3::load_group(a.scales, a.qzeros, (b * PERIODS) / periods_per_group, N, n0, quad, col_ok);
    };
    int b = b_begin + warp;
    if (b < b_end) fetch(b);
    for (; b < b_end; b += kWarps) {
      uint4 w[kRows];
#pragma unroll
      for (int u = 0; u < kRows; ++u) w[u] = next_w[u];
      const uint2 s = next_g.s;
      const uint32_t zbits = next_g.zero_bits(quad);
      if (b + kWarps < b_end) fetch(b + kWarps);

      float z[4];
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        uint32_t zc = (zbits >> (3 * c)) & 0x7u;
        if (a.zeros_minus_one) zc = (zc + 1u) & 0x7u;
        z[c] = float(zc);
      }
      float gacc[M][4], xsum[M];
#pragma unroll
      for (int m = 0; m < M; ++m) {
        xsum[m] = 0.f;
#pragma unroll
        for (int c = 0; c < 4; ++c) gacc[m][c] = 0.f;
      }
#pragma unroll
      for (int p = 0; p < PERIODS; ++p) {
        const int period = b * PERIODS + p;
        const bool in_k = period < periods;
        // x pairs (x_j, x_j+16) of the period for each row m, and their fp32 sum (for the zero point).
        __half2 xp[M][16];
#pragma unroll
        for (int m = 0; m < M; ++m) {
          const uint4* xv4 = reinterpret_cast<const uint4*>(x32 + int64_t(m) * (a.K / 2) + int64_t(period) * 16);
          uint32_t xw[16];
#pragma unroll
          for (int q = 0; q < 4; ++q) {
            const uint4 v = in_k ? __ldg(xv4 + q) : make_uint4(0, 0, 0, 0);
            xw[4 * q] = v.x; xw[4 * q + 1] = v.y; xw[4 * q + 2] = v.z; xw[4 * q + 3] = v.w;
          }
#pragma unroll
          for (int j = 0; j < 16; ++j)
            xp[m][j] = as_half2(__byte_perm(xw[j >> 1], xw[8 + (j >> 1)], (j & 1) ? 0x7632 : 0x5410));
          const uint32_t mine = in_k ? __ldg(x32 + int64_t(m) * (a.K / 2) + int64_t(period) * 16 + (lane & 15)) : 0u;
          const float2 f = __half22float2(as_half2(mine));
          float part = f.x + f.y;
#pragma unroll
          for (int o = 8; o >= 1; o >>= 1) part += __shfl_xor_sync(0xffffffffu, part, o);
          xsum[m] += part;
        }
        const uint32_t w0s[4] = {w[3 * p].x, w[3 * p].y, w[3 * p].z, w[3 * p].w};
        const uint32_t w1s[4] = {w[3 * p + 1].x, w[3 * p + 1].y, w[3 * p + 1].z, w[3 * p + 1].w};
        const uint32_t w2s[4] = {w[3 * p + 2].x, w[3 * p + 2].y, w[3 * p + 2].z, w[3 * p + 2].w};
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          __half2 d[16];
          decode3::period_pairs<Sixteenths>(w0s[c], w1s[c], w2s[c], d);
#pragma unroll
          for (int m = 0; m < M; ++m) {
            // 16 products of |v/16| <= 7/16 per lane: the chain stays below 7 max|x|.
            __half2 t = __hmul2(xp[m][0], d[0]);
#pragma unroll
            for (int j = 1; j < 16; ++j) t = __hfma2(xp[m][j], d[j], t);
            const float2 f = __half22float2(t);
            gacc[m][c] += f.x + f.y;
          }
        }
      }
      const float sc[4] = {__low2float(as_half2(s.x)), __high2float(as_half2(s.x)), __low2float(as_half2(s.y)),
                           __high2float(as_half2(s.y))};
#pragma unroll
      for (int m = 0; m < M; ++m)
#pragma unroll
        for (int c = 0; c < 4; ++c)
          // gacc holds sum x v / 16: subtract z sum x / 16, scale; the 16 comes back in the epilogue.
          acc[m][c] = fmaf(sc[c], fmaf(-z[c] * (1.0f / 16.0f), xsum[m], gacc[m][c]), acc[m][c]);
    }
  }
  gemv::finish<M>(acc, red, &last_flag, 16.0f, a.out, a.partial, a.counters, N);
}

gemv::Kernel kernel_for(int64_t M, int periods) {
  switch (M * 10 + periods) {
    case 12: return gemv3_kernel<1, 2>;
    case 11: return gemv3_kernel<1, 1>;
    case 21: return gemv3_kernel<2, 1>;
    case 31: return gemv3_kernel<3, 1>;
    case 41: return gemv3_kernel<4, 1>;
    default: return nullptr;
  }
}

}  // namespace

GemvPlan gemv3_plan(int64_t M, int64_t K, int64_t N, int64_t group_size, const GemvDevice& dev) {
  // Two periods (64 input channels) per batch at M = 1 when the groups allow, else one.
  const int periods = M == 1 && (group_size < 0 || group_size % 64 == 0) ? 2 : 1;
  const int64_t batches = (K / 32 + periods - 1) / periods;
  return gemv::make_plan(kernel_for(M, periods), periods, batches, N, dev, kWarps);
}

cudaError_t launch_gemv3(const GemvArgs& args, const GemvPlan& plan, cudaStream_t stream) {
  if (!gemv3_supports(args.M, args.K, args.N, args.group_size) ||
      (args.group_size > 0 && args.group_size % (32 * plan.batch) != 0))
    return cudaErrorInvalidValue;
  if (args.bf16) return cudaErrorInvalidValue;  // fp16 only
  // Dependent launches at M = 1 only: from M = 2 the kernel spends more time decoding than streaming,
  // and on the H100 it measured slower with them at M = 4 on 8192x28672 (119.4-123.8 against
  // 106.3-110.5 us in three A/B pairs; benchmarks/results/2026-11-22_h100_pdl3_ab_bench_kernels.txt).
  // Launched plainly at M = 4 it takes 105.8 us there (..._s6_gemv3-pdl-m1_bench_kernels.txt); the
  // smaller layers lose 0.3-1.5 us at M = 4 (4096x4096: 13.0 against 11.5 us, ..._s6final_...).
  return gemv::launch(kernel_for(args.M, plan.batch), args, plan, stream, /*dependent=*/args.M == 1);
}

}  // namespace gptq::cuda
