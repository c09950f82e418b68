// The 3-bit tensor-core GEMV: y [M, N] = x [M, K] W^T for M = 1..16 fp16 tokens over 3-bit weights in
// the checkpoint layout as stored (qweight [K*3/32, N]: three consecutive packed rows of a column, a
// "period", hold its 32 input channels, value j at bits 3j..3j+2 of the 96-bit run w0 | w1 << 32 |
// w2 << 64), contiguous groups of -1 or a multiple of 32.
//
// Why. The half2 GEMV (autogptq_gemv3.cu) multiplies in the instructions that decode, so its cost
// grows with every token (8192x28672: 42.8 us at m = 1, 110.5 at m = 4), and above m = 4 the op fell
// back to dequantize + cuBLAS (542.8 us at m = 16, 0.30x fp16;
// benchmarks/results/2026-11-23_h100_s9final_bench_kernels.txt). Here each weight is decoded once
// into an fp16 mma.sync operand and the tensor cores multiply it with all tokens, as the 4-bit
// tensor-core GEMV does (csrc/kernels/exllamav2/exllamav2_tcgemv.cu, whose work split this follows).
//
// Decode. The period's halves are joined so that one LOP3 puts two fields (v_j, v_j+16) at the same
// bit offset P <= 7 into the mantissas of a half2, 1024 + v 2^P (autogptq_decode3.cuh). Here one HFMA2
// with 2^-P and -2^(10-P) gives v exactly, HSUB2 the exact integer v - z and HMUL2 the weight
// (v - z) s, rounded once: 4 instructions a pair, besides the 11 that build the fields a period.
//
// Operands. The problem is transposed (features are the MMA's M, tokens its N). Lane (g, q) of a warp
// takes period 4b + q of batch b (4 periods, 128 channels) for features f = 32 w_c + 4g .. + 3 (three
// 16-byte loads, one a packed row; eight lanes with the same q read 128 contiguous bytes). Word c is
// row g (c = 0, 2) or g + 8 (c = 1, 3) of 16-feature tile c / 2. k16 step t (0..7) of the batch gives
// lane q's slots (2q, 2q + 1) the pair (v_2t, v_2t+16) of its period and (2q + 8, 2q + 9) the pair
// (v_2t+1, v_2t+17): the k slots of a step are 16 channels spread over the four periods. x is read
// in the same order: a lane loads its period's 32 channels of token g (16 words) and one PRMT a
// register pairs x_j with x_j+16.
#include "autogptq_launch.h"

#include "autogptq_decode3.cuh"
#include "autogptq_tcgemv.cuh"
#include "common/gemv.cuh"
#include "common/mma.cuh"

namespace gptq::cuda {
namespace {

using gemv::and_or;
using gemv::as_half2;
using gemv::as_u32;
using gemv::kThreads;
using gemv::kWarps;

constexpr int kPeriods = 4;  // periods a batch: one a q-lane

// The exact integer v of the 3-bit field at bit P of both halves of w: (1024 + v 2^P) 2^-P - 2^(10-P).
struct Integers {
  template <int P>
  static __device__ __forceinline__ __half2 get(uint32_t w) {
    constexpr uint32_t kMul = uint32_t(15 - P) << 10;             // 2^-P
    constexpr uint32_t kAdd = 0x8000u | (uint32_t(25 - P) << 10);  // -2^(10-P)
    return __hfma2(decode3::biased<P>(w), as_half2(kMul | (kMul << 16)), as_half2(kAdd | (kAdd << 16)));
  }
};

// The 16 pairs (v_j, v_j+16) of one feature's period as weights (v - z) s (z2, s2: z and s in both
// halves), each rounded once.
__device__ __forceinline__ void decode_period(uint32_t w0, uint32_t w1, uint32_t w2, __half2 z2, __half2 s2,
                                              uint32_t (&d)[16]) {
  __half2 v[16];
  decode3::period_pairs<Integers>(w0, w1, w2, v);
#pragma unroll
  for (int j = 0; j < 16; ++j) d[j] = as_u32(__hmul2(__hsub2(v[j], z2), s2));
}

// NT: token tiles of 8 (1: M <= 8, 2: M <= 16); WC: warp columns of 32 features a block.
template <int NT, int WC>
__global__ void __launch_bounds__(kThreads, 2) tcgemv3_kernel(GemvArgs a) {
  constexpr int kCols = 32 * WC;
  constexpr int kKWarps = kWarps / WC;
  __shared__ __align__(16) tcgemv::Smem<NT, WC> sm;

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
  const int wc = warp % WC, kw = warp / WC;
  const int64_t N = a.N, M = a.M, K = a.K;
  const int periods = static_cast<int>(K / 32);
  const int batches = (periods + kPeriods - 1) / kPeriods;
  const int b_begin = static_cast<int>(blockIdx.y) * a.batches_per_split;
  const int b_end = min(batches, b_begin + a.batches_per_split);
  const int periods_per_group = a.group_size < 0 ? max(periods, 1) : static_cast<int>(a.group_size / 32);
  const int64_t f_base = int64_t(blockIdx.x) * kCols + wc * 32 + 4 * g;  // N % 32 == 0: all 4 in or out
  const bool col_ok = f_base < N;
  const decode3::Quad quad(f_base);

  float acc[2][NT][4];
  tcgemv::zero(acc);

  // A lane's period is 3 packed rows (tcgemv::load_rows with LR = 3); K % 32 == 0, so a period is
  // inside K exactly when its rows are.
  const int rows = 3 * periods;
  if (col_ok) tcgemv::prefetch_rows<3>(a.qweight, N, f_base, rows, b_begin, b_end, kw, kKWarps, q);
  pdl::wait();
  pdl::launch_dependents();

  // The lane's period of the next batch (3 packed rows, its group's scales and zero bits) is loaded
  // into registers at the start of the current one, so that a batch of decoding covers its latency.
  uint4 next_w[3];
  decode3::Group next_g;
  auto fetch = [&](int b) {
    const int p = kPeriods * b + q;
    const bool ok = col_ok && p < periods;  // periods past K read as 0: x is 0 there
    tcgemv::load_rows<3>(next_w, a.qweight, N, f_base, rows, b, q, col_ok);
    next_g = decode3::load_group(a.scales, a.qzeros, (ok ? p : 0) / periods_per_group, N, f_base, quad, col_ok);
  };

  int b = b_begin + kw;
  if (b < b_end) fetch(b);
  for (; b < b_end; b += kKWarps) {
    const uint4 w0 = next_w[0], w1 = next_w[1], w2 = next_w[2];
    const uint2 s = next_g.s;
    const uint32_t zbits = next_g.zero_bits(quad);
    // x of this batch: token 8 nt + g, the lane's period (16 words); L1 serves the block's other
    // column warps.
    const int p = kPeriods * b + q;
    uint32_t xw[NT][16];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const int64_t tok = 8 * nt + g;
      const bool ok = tok < M && p < periods;
      const uint4* xr = reinterpret_cast<const uint4*>(a.x + tok * K + 32 * int64_t(p));
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const uint4 v = ok ? __ldg(xr + u) : make_uint4(0, 0, 0, 0);
        xw[nt][4 * u] = v.x, xw[nt][4 * u + 1] = v.y, xw[nt][4 * u + 2] = v.z, xw[nt][4 * u + 3] = v.w;
      }
    }
    if (b + kKWarps < b_end) fetch(b + kKWarps);

    const uint32_t ws[3][4] = {{w0.x, w0.y, w0.z, w0.w}, {w1.x, w1.y, w1.z, w1.w}, {w2.x, w2.y, w2.z, w2.w}};
#pragma unroll
    for (int pt = 0; pt < 2; ++pt) {
      // Tile pt: features f_base + 2pt (row g) and + 2pt + 1 (row g + 8), decoded one tile at a time so
      // that 32 registers of weights are live, not 64.
      uint32_t d[2][16];  // d[r][j]: feature f_base + 2pt + r, pair (v_j, v_j+16) as weights
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int c = 2 * pt + r;
        uint32_t zc = (zbits >> (3 * c)) & 0x7u;
        if (a.zeros_minus_one) zc = (zc + 1u) & 0x7u;  // GPTQ v1 stores z - 1
        const __half2 z2 = __half2half2(__ushort2half_rn(static_cast<unsigned short>(zc)));
        const __half2 s2 = as_half2(__byte_perm(pt == 0 ? s.x : s.y, 0u, r ? 0x3232 : 0x1010));
        decode_period(ws[0][c], ws[1][c], ws[2][c], z2, s2, d[r]);
      }
#pragma unroll
      for (int t = 0; t < 8; ++t) {
        const uint32_t af[4] = {d[0][2 * t], d[1][2 * t], d[0][2 * t + 1], d[1][2 * t + 1]};
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          const uint32_t xb[2] = {__byte_perm(xw[nt][t], xw[nt][t + 8], 0x5410),   // (x_2t, x_2t+16)
                                  __byte_perm(xw[nt][t], xw[nt][t + 8], 0x7632)};  // (x_2t+1, x_2t+17)
          mma_16816<__half>(acc[pt][nt], af, xb);
        }
      }
    }
  }

  tcgemv::reduce_and_store<NT, WC>(acc, sm, static_cast<int>(M), a.out, a.partial, a.counters, N);
}

constexpr int kWC = 2;  // warp columns a block: 64 features

gemv::Kernel kernel_for(int64_t M) { return M <= 8 ? tcgemv3_kernel<1, kWC> : tcgemv3_kernel<2, kWC>; }

}  // namespace

GemvPlan tcgemv3_plan(int64_t M, int64_t K, int64_t N, const GemvDevice& dev) {
  const int64_t batches = (K / 32 + kPeriods - 1) / kPeriods;
  return gemv::make_plan(kernel_for(M), kPeriods, batches, N, dev, kWarps / kWC, 32 * kWC);
}

cudaError_t launch_tcgemv3(const GemvArgs& args, const GemvPlan& plan, cudaStream_t stream) {
  if (!tcgemv3_supports(args.M, args.K, args.N, args.group_size) || args.bf16 || plan.batch != kPeriods)
    return cudaErrorInvalidValue;
  return gemv::launch(kernel_for(args.M), args, plan, stream);
}

}  // namespace gptq::cuda
