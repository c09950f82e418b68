// The 2- and 8-bit tensor-core GEMV: y [M, N] = x [M, K] W^T for M = 1..16 fp16 tokens over 2- or
// 8-bit weights in the checkpoint layout as stored (qweight [K * BITS / 32, N]: packed row r of a
// column holds its 32 / BITS input channels from (32 / BITS) r on, channel j of the row at bits
// BITS j .. BITS j + BITS - 1), contiguous groups.
//
// Why. The AutoGPTQ-style GEMV decodes each weight into fp32 and multiplies it with every token in
// the same instructions, so its time grows with the tokens: 8192x28672 at m = 16 took 416.7 us at
// 8 bits (0.41x fp16) and 375.6 at 2 bits (0.45x)
// (benchmarks/results/2026-11-23_h100_s10final_bench_kernels.txt). Here each weight is decoded once
// into an fp16 mma.sync operand and the tensor cores multiply it with all tokens, as in the 3- and
// 4-bit tensor-core GEMVs (autogptq_tcgemv3.cu, exllamav2_tcgemv.cu), whose work split this follows.
//
// Operands. The problem is transposed (features are the MMA's M, tokens its N). Lane (g, q) of a warp
// loads, in batch b, the LR packed rows 4 LR b + LR q .. + LR - 1 of features f = 32 w_c + 4 g .. + 3
// (a 16-byte load a row; the eight lanes with the same q read 128 contiguous bytes). Word c of a row is row g
// (c = 0, 2) or g + 8 (c = 1, 3) of 16-feature tile c / 2. The k slots (2q, 2q + 1) and (2q + 8, 2q + 9)
// of a k16 step take two pairs of the lane's own channels, and x is read in the same order, so the
// 16 channels of a step are spread over the four q-lanes.
//
// Decode, exact up to one rounding of (v - z) s:
// - 8 bits: a row is 4 channels c .. c + 3 (byte i: channel c + i); one step a row. One PRMT with
//   bytes 0x64 makes (1024 + v_c, 1024 + v_c+1) (slots 2q, 2q + 1) or (1024 + v_c+2, 1024 + v_c+3)
//   (slots 2q + 8, 2q + 9), HSUB2 with 1024 + z the integers v - z, HMUL2 the weights: 3
//   instructions a pair. x is the row's 4 channels of token g as they lie (8 bytes).
// - 2 bits: a row is 16 channels; the pair (v_j, v_j+8) lies at bit 2j of both halves, so after a
//   shift of the word by 4 floor(j / 2) it lies at P = 0 or 2. One LOP3 makes 1024 + v 2^P (exact:
//   below 2048, where fp16 counts in units of 1), one HFMA2 with 2^-P and -(2^(10-P) + z) the exact
//   v - z, HMUL2 the weight: 3 instructions a pair and 3 shifts a word; two addends a feature and
//   group. Step t of a row takes the pairs j = 2t (slots 2q, 2q + 1) and 2t + 1 (2q + 8, 2q + 9); one
//   PRMT pairs x_j with x_j+8.
#include "autogptq_launch.h"

#include <cstdlib>

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


__device__ __forceinline__ uint32_t splat(uint32_t h) { return h | (h << 16); }

// The 2-bit pair j = 2i + e (i = 0..3, e = 0, 1) of word w (channels j, j + 8 of its row) as the
// integers v - z: wi = w >> 4i holds it at P = 2e of both halves; add[e] = -(2^(10-P) + z) in both.
template <int E>
__device__ __forceinline__ __half2 pair2(uint32_t wi, const uint32_t (&add)[2]) {
  constexpr int P = 2 * E;
  const uint32_t h = and_or<(0x3u << P) | (0x3u << (P + 16)), 0x64006400u>(wi);  // 1024 + v 2^P
  constexpr uint32_t kMul = uint32_t(15 - P) << 10;                             // 2^-P
  return __hfma2(as_half2(h), as_half2(splat(kMul)), as_half2(add[E]));
}

// The weights of one word (one feature, one packed row) for k16 step T of its row, as the fp16 pairs
// (v - z) s of slots (2q, 2q + 1) and (2q + 8, 2q + 9), each rounded once.
template <int BITS>
struct Word;

template <>
struct Word<8> {
  struct Group {
    __half2 z, s;  // 1024 + z, s
  };
  static __device__ __forceinline__ Group group(uint32_t z, __half s) {
    return Group{__half2half2(__ushort2half_rn(static_cast<unsigned short>(1024u + z))), __half2half2(s)};
  }
  template <int T>  // one step a row
  static __device__ __forceinline__ void step(uint32_t w, const Group& gp, uint32_t (&d)[2]) {
    const __half2 lo = as_half2(__byte_perm(w, 0x64646464u, 0x4140));  // 1024 + v_c, 1024 + v_c+1
    const __half2 hi = as_half2(__byte_perm(w, 0x64646464u, 0x4342));  // 1024 + v_c+2, 1024 + v_c+3
    d[0] = as_u32(__hmul2(__hsub2(lo, gp.z), gp.s));
    d[1] = as_u32(__hmul2(__hsub2(hi, gp.z), gp.s));
  }
};

template <>
struct Word<2> {
  struct Group {
    uint32_t add[2];  // -(1024 + z), -(256 + z)
    __half2 s;
  };
  static __device__ __forceinline__ Group group(uint32_t z, __half s) {
    Group gp;
    gp.add[0] = as_u32(__half2half2(__ushort2half_rn(static_cast<unsigned short>(1024u + z))));
    gp.add[1] = as_u32(__half2half2(__ushort2half_rn(static_cast<unsigned short>(256u + z))));
    gp.add[0] ^= 0x80008000u, gp.add[1] ^= 0x80008000u;  // negated (exact: integers below 2048)
    gp.s = __half2half2(s);
    return gp;
  }
  template <int T>  // pairs j = 2T, 2T + 1, both in w >> 4T
  static __device__ __forceinline__ void step(uint32_t w, const Group& gp, uint32_t (&d)[2]) {
    const uint32_t wi = w >> (4 * T);
    d[0] = as_u32(__hmul2(pair2<0>(wi, gp.add), gp.s));
    d[1] = as_u32(__hmul2(pair2<1>(wi, gp.add), gp.s));
  }
};

// Step T of the lane's row: the two tiles' A fragments from words ws, then the MMAs with x (xw: the
// row's x words of each token tile).
template <int BITS, int NT, int T, int XW>
__device__ __forceinline__ void row_step(const uint32_t (&ws)[4], const typename Word<BITS>::Group (&gp)[4],
                                         const uint32_t (&xw)[NT][XW], float (&acc)[2][NT][4]) {
  uint32_t xb[NT][2];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    if constexpr (BITS == 8) {
      xb[nt][0] = xw[nt][0], xb[nt][1] = xw[nt][1];  // (x_c, x_c+1), (x_c+2, x_c+3)
    } else {
      xb[nt][0] = __byte_perm(xw[nt][T], xw[nt][T + 4], 0x5410);  // (x_2T, x_2T+8)
      xb[nt][1] = __byte_perm(xw[nt][T], xw[nt][T + 4], 0x7632);  // (x_2T+1, x_2T+9)
    }
  }
#pragma unroll
  for (int pt = 0; pt < 2; ++pt) {
    // Tile pt: features f_base + 2pt (row g) and + 2pt + 1 (row g + 8).
    uint32_t d0[2], d1[2];
    Word<BITS>::template step<T>(ws[2 * pt], gp[2 * pt], d0);
    Word<BITS>::template step<T>(ws[2 * pt + 1], gp[2 * pt + 1], d1);
    const uint32_t af[4] = {d0[0], d1[0], d0[1], d1[1]};
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) mma_16816<__half>(acc[pt][nt], af, xb[nt]);
  }
}

// BITS: 2 or 8; LR: packed rows a lane loads a batch (4 q-lanes: 4 LR rows a batch); NT: token tiles
// of 8 (1: M <= 8, 2: M <= 16); WC: warp columns of 32 features a block.
template <int BITS, int LR, int NT, int WC>
__global__ void __launch_bounds__(kThreads, 2) tcgemv28_kernel(GemvArgs a) {
  constexpr int kLaneRows = LR, kBatchRows = 4 * LR;
  using W = Word<BITS>;
  constexpr int kRowCh = 32 / BITS;     // channels a packed row
  constexpr int kSteps = kRowCh / 4;    // k16 steps a row (4 of the lane's channels a step)
  constexpr int kXWords = kRowCh / 2;   // x words (2 channels) a row and token
  constexpr int kCols = 32 * WC;
  constexpr int kKWarps = kWarps / WC;
  __shared__ __align__(16) tcgemv::Smem<NT, WC> sm;

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
  const int wc = warp % WC, kw = warp / WC;
  const int64_t N = a.N, M = a.M, K = a.K;
  const int rows = static_cast<int>(K / kRowCh);
  const int batches = (rows + kBatchRows - 1) / kBatchRows;
  const int b_begin = static_cast<int>(blockIdx.y) * a.batches_per_split;
  const int b_end = min(batches, b_begin + a.batches_per_split);
  const int rows_per_group = a.group_size < 0 ? max(rows, 1) : static_cast<int>(a.group_size / kRowCh);
  const int64_t f_base = int64_t(blockIdx.x) * kCols + wc * 32 + 4 * g;  // N % 32 == 0: all 4 in or out
  const bool col_ok = f_base < N;
  // The quad's zero points in a row of qzeros [G, N * BITS / 32]: one word at 8 bits, 8 bits of one
  // word at 2 bits.
  const int64_t zero_word = f_base * BITS / 32;
  const int zero_shift = static_cast<int>((f_base * BITS) & 31);
  constexpr uint32_t kZeroMask = (1u << BITS) - 1u;

  float acc[2][NT][4];
  tcgemv::zero(acc);

  if (col_ok) tcgemv::prefetch_rows<LR>(a.qweight, N, f_base, rows, b_begin, b_end, kw, kKWarps, q);
  pdl::wait();
  pdl::launch_dependents();

  // The lane's rows of the next batch (and its group's scales and zero word) are loaded into
  // registers at the start of the current one, so that a batch of decoding covers their latency.
  // The lane's LR rows lie in one group (group_size a multiple of their channels).
  uint4 next_w[kLaneRows];
  uint2 next_s;
  uint32_t next_z;
  auto fetch = [&](int b) {
    tcgemv::load_rows<LR>(next_w, a.qweight, N, f_base, rows, b, q, col_ok);
    const int r0 = kBatchRows * b + kLaneRows * q;
    const int64_t grp = (col_ok && r0 < rows ? r0 : 0) / rows_per_group;
    next_s = col_ok ? __ldg(reinterpret_cast<const uint2*>(a.scales + grp * N + f_base)) : make_uint2(0, 0);
    next_z = col_ok ? __ldg(a.qzeros + grp * (N * BITS / 32) + zero_word) : 0u;
  };

  int b = b_begin + kw;
  if (b < b_end) fetch(b);
  for (; b < b_end; b += kKWarps) {
    uint4 w[kLaneRows];
#pragma unroll
    for (int u = 0; u < kLaneRows; ++u) w[u] = next_w[u];
    const uint2 s = next_s;
    const uint32_t zbits = next_z >> zero_shift;
    if (b + kKWarps < b_end) fetch(b + kKWarps);

    // The group parameters of the lane's 4 features (feature c: scale half c of s, zero bits c).
    typename W::Group gp[4];
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      uint32_t z = (zbits >> (BITS * c)) & kZeroMask;
      if (a.zeros_minus_one) z = (z + 1u) & kZeroMask;  // GPTQ v1 stores z - 1
      const uint32_t sw = c < 2 ? s.x : s.y;
      gp[c] = W::group(z, __ushort_as_half(static_cast<unsigned short>(c & 1 ? sw >> 16 : sw & 0xFFFFu)));
    }

    const int r0 = kBatchRows * b + kLaneRows * q;
#pragma unroll
    for (int u = 0; u < kLaneRows; ++u) {
      const int r = r0 + u;
      // x of this row: token 8 nt + g, the row's channels; L1 serves the block's other column warps.
      uint32_t xw[NT][kXWords];
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const int64_t tok = 8 * nt + g;
        const bool ok = tok < M && r < rows;
        const __half* xr = a.x + tok * K + int64_t(r) * kRowCh;
        if constexpr (BITS == 8) {
          const uint2 v = ok ? __ldg(reinterpret_cast<const uint2*>(xr)) : make_uint2(0, 0);
          xw[nt][0] = v.x, xw[nt][1] = v.y;
        } else {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const uint4 v = ok ? __ldg(reinterpret_cast<const uint4*>(xr) + h) : make_uint4(0, 0, 0, 0);
            xw[nt][4 * h] = v.x, xw[nt][4 * h + 1] = v.y, xw[nt][4 * h + 2] = v.z, xw[nt][4 * h + 3] = v.w;
          }
        }
      }
      const uint32_t ws[4] = {w[u].x, w[u].y, w[u].z, w[u].w};
      row_step<BITS, NT, 0>(ws, gp, xw, acc);
      if constexpr (kSteps == 4) {  // 2 bits
        row_step<BITS, NT, 1>(ws, gp, xw, acc);
        row_step<BITS, NT, 2>(ws, gp, xw, acc);
        row_step<BITS, NT, 3>(ws, gp, xw, acc);
      }
    }
  }

  tcgemv::reduce_and_store<NT, WC>(acc, sm, static_cast<int>(M), a.out, a.partial, a.counters, N);
}

constexpr int kWC = 2;  // warp columns a block: 64 features

// Packed rows a lane a batch: 4 at 8 bits (16 channels); at 2 bits 4 (64 channels) up to 8 tokens
// where the groups allow, else 2 (32 channels). With 2 rows a 2-bit lane keeps only 64 bytes in
// flight (8192x28672 at m = 2..4: 53.8-54.3 against 47.1-47.9 us with 4), but with 4 rows and 16
// tokens ptxas spills (91.8 against 70.2; benchmarks/results/2026-11-23_h100_s11_tcgemv28-a_ab.txt).
// GPTQ_AUTOGPTQ_TCGEMV28_LANE_ROWS=2 or 4 forces one where the groups allow (tuning and tests).
int lane_rows(int64_t M, int64_t bits, int64_t group_size) {
  static const int env = [] {
    const char* e = std::getenv("GPTQ_AUTOGPTQ_TCGEMV28_LANE_ROWS");
    const int v = e != nullptr ? std::atoi(e) : 0;
    return v == 2 || v == 4 ? v : 0;
  }();
  if (bits == 8) return 4;
  const bool four_ok = group_size < 0 || group_size % 64 == 0;
  if (env != 0) return four_ok ? env : 2;
  return four_ok && M <= 8 ? 4 : 2;
}

template <int BITS, int LR>
gemv::Kernel kernel_lr(int64_t M) {
  return M <= 8 ? tcgemv28_kernel<BITS, LR, 1, kWC> : tcgemv28_kernel<BITS, LR, 2, kWC>;
}

gemv::Kernel kernel_for(int64_t M, int64_t bits, int lr) {
  if (bits == 8 && lr == 4) return kernel_lr<8, 4>(M);
  if (bits == 2 && lr == 4) return kernel_lr<2, 4>(M);
  if (bits == 2 && lr == 2) return kernel_lr<2, 2>(M);
  return nullptr;
}

}  // namespace

GemvPlan tcgemv28_plan(int64_t M, int64_t K, int64_t N, int64_t bits, int64_t group_size, const GemvDevice& dev) {
  const int lr = lane_rows(M, bits, group_size);
  const int64_t rows = K * bits / 32;
  const int64_t batches = (rows + 4 * lr - 1) / (4 * lr);
  return gemv::make_plan(kernel_for(M, bits, lr), 4 * lr, batches, N, dev, kWarps / kWC, 32 * kWC);
}

bool tcgemv28_one_wave(int64_t K, int64_t N, int64_t bits, int64_t group_size, int sm_count) {
  GemvDevice dev;
  dev.sm_count = sm_count;
  const GemvPlan p = tcgemv28_plan(1, K, N, bits, group_size, dev);
  return p.col_blocks <= int64_t(sm_count) * p.blocks_per_sm;
}

template <int BITS>
cudaError_t launch_tcgemv28(const GemvArgs& args, const GemvPlan& plan, cudaStream_t stream) {
  const int lr = plan.batch / 4;
  if (!tcgemv28_supports(args.M, args.K, args.N, args.group_size, BITS) || args.bf16 ||
      (args.group_size > 0 && args.group_size % (lr * 32 / BITS) != 0))
    return cudaErrorInvalidValue;
  return gemv::launch(kernel_for(args.M, BITS, lr), args, plan, stream);
}
template cudaError_t launch_tcgemv28<2>(const GemvArgs&, const GemvPlan&, cudaStream_t);
template cudaError_t launch_tcgemv28<8>(const GemvArgs&, const GemvPlan&, cudaStream_t);

}  // namespace gptq::cuda
