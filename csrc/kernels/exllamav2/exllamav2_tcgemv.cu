// The tensor-core GEMV: y [M, N] = x [M, K] W^T for M = 1..16 tokens over 4-bit weights in the
// checkpoint layout (fp16 or bf16, contiguous groups), with the half2 GEMV's streaming structure and
// mma.sync doing the products. The op takes it for fp16 m = 2..8 and bf16 m = 1..8
// (exllamav2_torch.cpp).
//
// Why. The half2 GEMV (exllamav2_kernel.cu) streams at the copy rate at M = 1 with about 13
// instructions a word of 8 weights: it decodes and multiplies in the same half2 instructions, so each
// further token adds 4 HFMA2 a word (8192x28672 at m = 2: 57.4 against 45.5 us at m = 1). Here each
// weight is decoded once into an fp16/bf16 MMA operand (13 instructions a word in fp16, 15 in bf16,
// as in the Hopper GEMM, exllamav2_decode.cuh) and the tensor cores multiply it with all tokens: up to
// 8 tokens in one m16n8k16 per 16 features x 16 channels, 16 in two. So the instructions a weight do
// not grow with M: on the H100, 8192x28672 takes 50.1-51.3 us at m = 2..8.
//
// Operands. The problem is transposed: features are the MMA's M (A, from registers), tokens its N (B).
// Lane (g = lane / 4, q = lane % 4) of a warp loads 16 bytes of qweight [K/8, N] at packed row
// 4 rho + q of its batch (rho = 0..R-1) and features f_j = 32 j + 4 g .. + 3 of the warp's 32 J
// (j = 0..J-1): eight lanes with the same q read 128 contiguous bytes. Word c of such a load is row g
// (c = 0, 2) or g + 8 (c = 1, 3) of 16-feature tile (j, c / 2), so the epilogue knows each
// accumulator's feature. A word's pairs (e0, e4), (e1, e5) fill k slots (2q, 2q + 1), (2q + 8, 2q + 9)
// of k16 step 0 and (e2, e6), (e3, e7) those of step 1: the four q-lanes' packed rows together make
// the 16 channels of a step. x is read in the same order: one 16-byte load of x[token][8r .. 8r + 7]
// and four PRMT give B's two registers for both steps, token g (tile 0) or g + 8 (tile 1).
//
// Work split (as in the GEMV). A block covers 32 J WC features: WC warp columns of 32 J features, and
// 8 / WC warps along K that take batches of 4 R packed rows (32 R channels, never straddling a group)
// round-robin. Each warp loads its next batch (weights, scales, zero words, x) at the start of the
// current one, so a batch of decoding covers the loads' latency: into registers, or for x at
// 16 tokens (XS) by cp.async into two shared-memory slots per lane, since x in registers there spills.
// Warps of a column are added through shared memory in a fixed tree, and the K splits (grid.y, one
// wave of resident blocks) by the last block of each column strip in split order (gemv::store_tile):
// results are deterministic.
#include "exllamav2_launch.h"

#include <cstdio>
#include <cstdlib>
#include <utility>

#include "common/cp_async.cuh"
#include "common/gemv.cuh"
#include "common/mma.cuh"
#include "exllamav2_decode.cuh"

namespace gptq::cuda {
namespace {

using gemv::increment_nibbles;
using gemv::kThreads;
using gemv::kWarps;
using gemv::load_stream;

// x[token][8r .. 8r + 7] (16 bytes) -> the B registers of k16 steps 0 and 1: (ch 0, 4), (1, 5) and
// (2, 6), (3, 7), the channel pairs the decode puts in one A register.
__device__ __forceinline__ void x_pairs(const uint4& v, uint32_t (&b)[2][2]) {
  b[0][0] = __byte_perm(v.x, v.z, 0x5410);
  b[0][1] = __byte_perm(v.x, v.z, 0x7632);
  b[1][0] = __byte_perm(v.y, v.w, 0x5410);
  b[1][1] = __byte_perm(v.y, v.w, 0x7632);
}

// NT: token tiles of 8 (1: M <= 8, 2: M <= 16); J: 16-byte loads a lane a packed row (32 J features
// a warp); WC: warp columns a block; R: packed rows a lane a batch.
template <typename T, int NT, int J, int WC, int R, bool XS>
__global__ void __launch_bounds__(kThreads, 2) exllamav2_tcgemv_kernel(GemvArgs a) {
  using D = Decode<T>;
  constexpr int kCols = 32 * J * WC;  // features a block
  constexpr int kKWarps = kWarps / WC;  // warps along K
  constexpr int kBatchRows = 4 * R;   // packed rows a batch
  constexpr int kTok = 8 * NT;
  static_assert(kKWarps >= 2 && (kKWarps & (kKWarps - 1)) == 0, "a power-of-two tree of K warps");
  // x slots (XS): lane l of warp w keeps its 16-byte x chunks at xs[w][batch parity][rho][nt][l],
  // copied by cp.async and read back by the same lane, so no barrier orders them; the block's warp
  // sums reuse the space at the end.
  constexpr int kXBytes = XS ? kWarps * 2 * R * NT * 32 * 16 : 16;
  constexpr int kRedBytes = (kKWarps / 2) * kTok * kCols * 4;
  __shared__ __align__(16) unsigned char smem[kXBytes > kRedBytes ? kXBytes : kRedBytes];
  __shared__ int last_flag;
  uint4 (*xs)[R][NT][32] = reinterpret_cast<uint4 (*)[R][NT][32]>(smem) + (threadIdx.x >> 5) * 2;
  float (*red)[kTok][kCols] = reinterpret_cast<float (*)[kTok][kCols]>(smem);

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
  const int wc = warp % WC, kw = warp / WC;
  const int64_t N = a.N, M = a.M;
  const int rows = static_cast<int>(a.K / 8);
  const int batches = (rows + kBatchRows - 1) / kBatchRows;
  const int b_begin = static_cast<int>(blockIdx.y) * a.batches_per_split;
  const int b_end = min(batches, b_begin + a.batches_per_split);
  const int rows_per_group = a.group_size < 0 ? max(rows, 1) : static_cast<int>(a.group_size / 8);
  const int64_t zero_row_words = N / 8;
  // First feature of load j; N % 8 == 0, so a load is wholly inside or wholly outside [0, N).
  const int64_t f_base = int64_t(blockIdx.x) * kCols + wc * (32 * J) + 4 * g;
  const uint4* x4 = reinterpret_cast<const uint4*>(a.x);  // x row m, packed row r: x4[m * K/8 + r]

  float acc[J][2][NT][4];
#pragma unroll
  for (int j = 0; j < J; ++j)
#pragma unroll
    for (int p = 0; p < 2; ++p)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[j][p][nt][i] = 0.f;

  // The warp's first two batches into L2 while the kernel before may still run (common/pdl.cuh).
  for (int b = b_begin + kw; b < min(b_end, b_begin + kw + 2 * kKWarps); b += kKWarps)
#pragma unroll
    for (int rho = 0; rho < R; ++rho) {
      const int r = b * kBatchRows + 4 * rho + q;
#pragma unroll
      for (int j = 0; j < J; ++j)
        if (r < rows && f_base + 32 * j < N) pdl::prefetch_l2(a.qweight + int64_t(r) * N + f_base + 32 * j);
    }
  pdl::wait();
  pdl::launch_dependents();

  // The warp's next batch (weights, scales, zero words, and x unless XS) is loaded into registers at
  // the start of the current one, so a whole batch of decoding covers its latency. With XS, x goes
  // by cp.async into two slots per lane instead (no registers held: at 16 tokens x held in registers
  // would cost the second block an SM).
  uint4 next_w[R][J], next_x[XS ? 1 : R][NT];
  uint2 next_s[J];
  uint32_t next_z[J];
  auto fetch = [&](int b) {
    const int r0 = b * kBatchRows;
#pragma unroll
    for (int rho = 0; rho < R; ++rho) {
      const int r = r0 + 4 * rho + q;
#pragma unroll
      for (int j = 0; j < J; ++j)
        // Rows past K and features past N read as 0: x is 0 there, or the feature is never stored.
        next_w[rho][j] = r < rows && f_base + 32 * j < N ? load_stream(a.qweight + int64_t(r) * N + f_base + 32 * j)
                                                         : make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const int tok = 8 * nt + g;
        const bool valid = r < rows && tok < M;
        if constexpr (XS) {
          cp_async16(smem_addr(&xs[(b / kKWarps) & 1][rho][nt][lane]), valid ? x4 + int64_t(tok) * rows + r : x4,
                     valid);
        } else {
          next_x[rho][nt] = valid ? __ldg(x4 + int64_t(tok) * rows + r) : make_uint4(0, 0, 0, 0);
        }
      }
    }
    if constexpr (XS) cp_async_commit();
    const int64_t grp = r0 / rows_per_group;
#pragma unroll
    for (int j = 0; j < J; ++j) {
      const int64_t f = f_base + 32 * j;
      next_s[j] = f < N ? __ldg(reinterpret_cast<const uint2*>(a.scales + grp * N + f)) : make_uint2(0, 0);
      next_z[j] = f < N ? __ldg(a.qzeros + grp * zero_row_words + f / 8) : 0u;
    }
  };

  int b = b_begin + kw;
  if (b < b_end) fetch(b);
  for (; b < b_end; b += kKWarps) {
    uint4 w[R][J], xv[XS ? 1 : R][NT];
    uint2 s[J];
    uint32_t zw[J];
#pragma unroll
    for (int rho = 0; rho < R; ++rho) {
#pragma unroll
      for (int j = 0; j < J; ++j) w[rho][j] = next_w[rho][j];
      if constexpr (!XS) {
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) xv[rho][nt] = next_x[rho][nt];
      }
    }
#pragma unroll
    for (int j = 0; j < J; ++j) {
      s[j] = next_s[j];
      zw[j] = next_z[j];
    }
    if constexpr (XS) cp_async_wait<0>();  // this batch's x (the next batch's copies start below)
    if (b + kKWarps < b_end) fetch(b + kKWarps);

    uint32_t xb[R][NT][2][2];  // [rho][token tile][k16 step][B register]
#pragma unroll
    for (int rho = 0; rho < R; ++rho)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        if constexpr (XS) {
          x_pairs(xs[(b / kKWarps) & 1][rho][nt][lane], xb[rho][nt]);
        } else {
          x_pairs(xv[rho][nt], xb[rho][nt]);
        }
      }

#pragma unroll
    for (int j = 0; j < J; ++j) {
      // Group parameters of features f_j + c: z's nibbles sit at bits 16 (g & 1) + 4c of the zero
      // word (f_j % 8 = 4 (g & 1)); scales are the halves of s[j].
      uint32_t z = zw[j] >> (16 * (g & 1));
      if (a.zeros_minus_one) z = increment_nibbles(z);
      uint32_t zl[4], zh[4], sc[4];
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        zl[c] = D::bias_z((z >> (4 * c)) & 0xFu);
        zh[c] = D::neg_z(zl[c]);
        sc[c] = __byte_perm(c < 2 ? s[j].x : s[j].y, 0u, (c & 1) ? 0x3232 : 0x1010);
      }
#pragma unroll
      for (int rho = 0; rho < R; ++rho) {
        const uint32_t words[4] = {w[rho][j].x, w[rho][j].y, w[rho][j].z, w[rho][j].w};
        uint32_t d[4][4];
#pragma unroll
        for (int c = 0; c < 4; ++c) D::word(words[c], zl[c], zh[c], sc[c], d[c]);
#pragma unroll
        for (int p = 0; p < 2; ++p)
#pragma unroll
          for (int t = 0; t < 2; ++t) {
            const uint32_t af[4] = {d[2 * p][2 * t], d[2 * p + 1][2 * t], d[2 * p][2 * t + 1], d[2 * p + 1][2 * t + 1]};
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) mma_16816<T>(acc[j][p][nt], af, xb[rho][nt][t]);
          }
      }
    }
  }
  __syncthreads();  // every lane's x slots are read (all copies were waited for) before the warp sums reuse them

  // Warps of a column, added in a fixed tree: K warp kw += kw + h for h = kKWarps / 2, ..., 1.
  // C fragment of tile (j, p), token tile nt: i = 0, 1 is feature f_j + 2p, i = 2, 3 feature f_j + 2p + 1;
  // tokens 8 nt + 2q + (i & 1).
#define GPTQ_TCGEMV_TILE_LOOP(BUF, STMT)                                                              \
  _Pragma("unroll") for (int j = 0; j < J; ++j) _Pragma("unroll") for (int p = 0; p < 2; ++p)          \
      _Pragma("unroll") for (int nt = 0; nt < NT; ++nt) _Pragma("unroll") for (int i = 0; i < 4; ++i) { \
    float& slot = (BUF)[8 * nt + 2 * q + (i & 1)][wc * (32 * J) + 32 * j + 4 * g + 2 * p + (i >> 1)];     \
    float& v = acc[j][p][nt][i];                                                                      \
    STMT;                                                                                             \
  }
  for (int h = kKWarps / 2; h >= 1; h /= 2) {
    if (kw >= h && kw < 2 * h) GPTQ_TCGEMV_TILE_LOOP(red[kw - h], slot = v)
    __syncthreads();
    if (kw < h) GPTQ_TCGEMV_TILE_LOOP(red[kw], v += slot)
    __syncthreads();
  }
  if (kw == 0) GPTQ_TCGEMV_TILE_LOOP(red[0], slot = v)
#undef GPTQ_TCGEMV_TILE_LOOP
  gemv::store_tile<kCols>(&red[0][0][0], static_cast<int>(M), &last_flag, reinterpret_cast<T*>(a.out), a.partial,
                          a.counters, M, N);
}

// A variant of the kernel (J = kJ always): WC, R, and x by cp.async through shared memory (XS) or in
// registers. The defaults are the fastest measured on the H100
// (benchmarks/results/2026-11-23_h100_s9_tcgemv-*): WC = 2, R = 2 with x in registers for M <= 8
// ("2x2x2"), the same with x slots for M = 9..16 ("2x2x2s"), where x in registers spills (8192x28672
// at m = 16: 64.4 against 74.9 us). GPTQ_EXLLAMAV2_TCGEMV_CONFIG, "2x<WC>x<R>" with an optional "s"
// (WC = 1 or 2, R = 1 or 2), picks one for both (tuning and tests). (R = 4 with x in registers
// spilled 100+ bytes and lost, J = 4 spilled more; benchmarks/results/2026-11-23_h100_s9_tcgemv-a/b_*.)
constexpr int kJ = 2;  // 16-byte loads a lane a packed row: 64 features a warp column

struct Config {
  int wc, r;
  bool xs;
};

Config config_for(int64_t M) {
  static const std::pair<bool, Config> env = [] {
    const char* e = std::getenv("GPTQ_EXLLAMAV2_TCGEMV_CONFIG");
    int j = 0, wc = 0, r = 0;
    char xs = 0;
    const int n = e == nullptr ? 0 : std::sscanf(e, "%dx%dx%d%c", &j, &wc, &r, &xs);
    const bool ok = n >= 3 && j == kJ && (wc == 1 || wc == 2) && (r == 1 || r == 2);
    return std::make_pair(ok, Config{wc, r, n == 4 && xs == 's'});
  }();
  if (env.first) return env.second;
  return Config{2, 2, M > 8};
}

// R for the group size: batches of 32 R channels must not straddle a group.
int rows_for(const Config& c, int64_t group_size) {
  return group_size < 0 || group_size % (32 * c.r) == 0 ? c.r : 1;
}

template <typename T, int NT, int J, int WC, bool XS>
gemv::Kernel kernel_r(int r) {
  return r == 2 ? exllamav2_tcgemv_kernel<T, NT, J, WC, 2, XS> : exllamav2_tcgemv_kernel<T, NT, J, WC, 1, XS>;
}

template <typename T, int NT>
gemv::Kernel kernel_nt(const Config& c, int r) {
  if (c.xs) return c.wc == 1 ? kernel_r<T, NT, kJ, 1, true>(r) : kernel_r<T, NT, kJ, 2, true>(r);
  return c.wc == 1 ? kernel_r<T, NT, kJ, 1, false>(r) : kernel_r<T, NT, kJ, 2, false>(r);
}

gemv::Kernel kernel_for(int64_t M, int r, bool bf16) {
  const Config c = config_for(M);
  if (M <= 8) return bf16 ? kernel_nt<__nv_bfloat16, 1>(c, r) : kernel_nt<__half, 1>(c, r);
  return bf16 ? kernel_nt<__nv_bfloat16, 2>(c, r) : kernel_nt<__half, 2>(c, r);
}

}  // namespace

GemvPlan exllamav2_tcgemv_plan(int64_t M, int64_t K, int64_t N, int64_t group_size, bool bf16, const GemvDevice& dev) {
  const Config c = config_for(M);
  const int r = rows_for(c, group_size);
  const int64_t batches = (K / 8 + 4 * r - 1) / (4 * r);
  return gemv::make_plan(kernel_for(M, r, bf16), 4 * r, batches, N, dev, kWarps / c.wc, 32 * kJ * c.wc);
}

cudaError_t launch_exllamav2_tcgemv(const GemvArgs& args, const GemvPlan& plan, cudaStream_t stream) {
  if (args.M < 1 || args.M > kExllamaV2TcGemvMaxM || args.K % 8 != 0 || args.N % 8 != 0 ||
      (args.group_size > 0 && args.group_size % (8 * plan.batch) != 0))
    return cudaErrorInvalidValue;
  return gemv::launch(kernel_for(args.M, plan.batch / 4, args.bf16), args, plan, stream);
}

}  // namespace gptq::cuda
