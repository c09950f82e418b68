// ExLlamaV2-style GEMV for M = 1..4 rows of fp16 or bf16 activations over 4-bit weights (arithmetic
// in exllamav2_launch.h).
//
// Work split. A block is 8 warps over COLS = 4 LPR output columns (LPR lanes a packed row: 32, 16, 8
// or 4).
// Lane l owns columns 4 (l % LPR) .. 4 (l % LPR) + 3, so one 16-byte load of a packed row (qweight
// [K/8, N]) gives it 4 columns x 8 input channels; a warp load covers 32 / LPR rows of 16 LPR
// contiguous bytes (whole 128-byte lines down to LPR = 8). The block's K range (one split of grid.y)
// is cut into batches of ROWS consecutive packed rows (8 * ROWS input channels, never straddling a
// group) dealt round-robin to the 8 * 32 / LPR row slots of the block (slot = 32 / LPR * warp + l / LPR).
// At the end the slots of a warp are added by shuffles, the 8 warps through shared memory, and the
// splits by the last block of each column strip to finish (an atomic counter per strip, reset by that
// block), in split order.
//
// Why narrower blocks. With 128 columns a block, a small layer fills the GPU's one wave of blocks only
// by splitting K, and then the last block of each strip adds the splits after all the others have
// finished: a serial tail of an atomic and an L2 round trip. 4096x4096 has 32 strips of 128 columns
// but 128 of 32, one block an SM with the whole of K and no split (default_config below).
//
// Bandwidth. On the H100 a GEMV streams at the copy rate only with roughly 100+ KB of loads in flight
// per SM. Each lane therefore loads its next batch (weights, scale, zero word) into registers before
// it decodes the current one: 2 x ROWS x 16 bytes per lane stay in flight with 2 blocks per SM.
// x is read at use time through L1 (the lanes of a row slot read the same 16 bytes), costing no
// registers. Measured in a stand-alone lab against a read-only kernel on the same bytes: 44 us vs
// 40 us on 8192 x 28672 (see benchmarks/results/2026-11-22_h100_gemv_lab.txt).
#include "exllamav2_launch.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <type_traits>
#include <utility>

#include "common/gemv.cuh"

namespace gptq::cuda {
namespace {

using gemv::and_or;
using gemv::as_half2;
using gemv::as_u32;
using gemv::kColsPerBlock;
using gemv::kThreads;
using gemv::kWarps;
using gemv::load_stream;

// Per column c of the lane's quad: -(64 + z/16) and -(4 + z/16) as half2, the addends that turn the
// magic-number fields into (q - z) / 16 (exact: both are multiples of 2^-4 below 2^7).
__device__ __forceinline__ void zero_addends(uint32_t zw, bool zeros_minus_one, uint32_t (&zlo)[4],
                                             uint32_t (&zhi)[4]) {
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    uint32_t z = (zw >> (4 * c)) & 0xFu;
    if (zeros_minus_one) z = (z + 1u) & 0xFu;
    const float f = float(z) * (1.0f / 16.0f);
    zlo[c] = as_u32(__float2half2_rn(-(64.0f + f)));
    zhi[c] = as_u32(__float2half2_rn(-(4.0f + f)));
  }
}

// bf16 arithmetic of one packed row for the M rows of x (fp32 throughout, see exllamav2_launch.h):
// adds (16 x_i)(16 + q_i / 16) for the even channels i and x_i (16 + q_i) for the odd ones into
// gacc[m][c] for the lane's 4 columns c, and the column-independent sums 16 sum(x') (x' the scaled x:
// 16 x_i even, x_i odd) and sum(x) into bias[m] and xsum[m]. xv[m] holds the row's 8 bf16 channels of
// x row m.
template <int M>
__device__ __forceinline__ void bf16_row(const uint4 (&xv)[M], const uint4& w, float (&gacc)[M][4], float (&bias)[M],
                                         float (&xsum)[M]) {
  float xf[M][8];  // channel i of the row: 16 x_i (even i) or x_i (odd i), exact
#pragma unroll
  for (int m = 0; m < M; ++m) {
    const uint32_t xw[4] = {xv[m].x, xv[m].y, xv[m].z, xv[m].w};  // word j: channels 2j (low half), 2j + 1
    float even = 0.f, odd = 0.f;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float lo = __uint_as_float(xw[j] << 16);
      xf[m][2 * j] = lo * 16.0f;
      xf[m][2 * j + 1] = __uint_as_float(xw[j] & 0xFFFF0000u);
      even += lo;
      odd += xf[m][2 * j + 1];
    }
    xsum[m] += even + odd;
    bias[m] = fmaf(256.0f, even, fmaf(16.0f, odd, bias[m]));
  }
  const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    // Byte b of the word (channels 2b, 2b + 1) moved to bits 15..22, the top of an fp32 mantissa, where
    // one LOP3 with 16.0f (0x41800000) makes 16 + q / 16 (nibble at bits 15-18) or 16 + q (bits 19-22).
    // (The top nibble must stay below bit 23, the exponent's lowest bit. The bias terms, 256 x and
    // 16 x against products q x, cost up to 8 of fp32's 24 bits: still far finer than bf16's 8.)
    const uint32_t q = words[c];
    const uint32_t at15[4] = {q << 15, q << 7, q >> 1, q >> 9};
#pragma unroll
    for (int b = 0; b < 4; ++b) {
      const float lo = __uint_as_float(and_or<0x00078000u, 0x41800000u>(at15[b]));
      const float hi = __uint_as_float(and_or<0x00780000u, 0x41800000u>(at15[b]));
#pragma unroll
      for (int m = 0; m < M; ++m) gacc[m][c] = fmaf(xf[m][2 * b + 1], hi, fmaf(xf[m][2 * b], lo, gacc[m][c]));
    }
  }
}

template <typename T, int M, int ROWS, int LPR>
__global__ void __launch_bounds__(kThreads) exllamav2_gemv_kernel(GemvArgs a) {
  static_assert(ROWS % 2 == 0, "two rows share one half2 chain");
  static_assert(LPR == 32 || LPR == 16 || LPR == 8 || LPR == 4, "a row slot is 4, 8, 16 or 32 lanes");
  constexpr bool kHalf = std::is_same_v<T, __half>;
  constexpr int kCols = 4 * LPR, kSlotsPerWarp = 32 / LPR, kSlots = kWarps * kSlotsPerWarp;
  __shared__ float red[kWarps][M][kCols];
  __shared__ int last_flag;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int slot = warp * kSlotsPerWarp + lane / LPR;
  const int64_t N = a.N;
  const int64_t n0 = int64_t(blockIdx.x) * kCols + (lane % LPR) * 4;
  const int rows = static_cast<int>(a.K / 8);
  const int batches = (rows + ROWS - 1) / ROWS;
  const int b_begin = static_cast<int>(blockIdx.y) * a.batches_per_split;
  const int b_end = min(batches, b_begin + a.batches_per_split);
  const int rows_per_group = a.group_size < 0 ? max(rows, 1) : static_cast<int>(a.group_size / 8);
  const int64_t zero_row_words = N / 8;
  const int zero_shift = 4 * static_cast<int>(n0 & 7);
  const uint4* x4 = reinterpret_cast<const uint4*>(a.x);  // x row m, packed row r: x4[m * K/8 + r]
  const __half2 k16 = as_half2(0x2C002C00u), k256 = as_half2(0x1C001C00u);  // 2^-4, 2^-8

  float acc[M][4];
#pragma unroll
  for (int m = 0; m < M; ++m)
#pragma unroll
    for (int c = 0; c < 4; ++c) acc[m][c] = 0.f;

  // The slot's first two batches into L2 while the kernel before may still run (common/pdl.cuh).
  if (n0 < N) {
    for (int b = b_begin + slot; b < min(b_end, b_begin + slot + 2 * kSlots); b += kSlots)
#pragma unroll
      for (int u = 0; u < ROWS; ++u)
        if (b * ROWS + u < rows) pdl::prefetch_l2(a.qweight + int64_t(b * ROWS + u) * N + n0);
  }
  pdl::wait();
  pdl::launch_dependents();

  if (n0 < N) {
    uint4 next_w[ROWS];
    uint2 next_s;
    uint32_t next_z;
    auto fetch = [&](int b) {
      const int r0 = b * ROWS;
#pragma unroll
      for (int u = 0; u < ROWS; ++u)
        // Rows past K read as code 8 against x = 0 below: they add nothing.
        next_w[u] = r0 + u < rows ? load_stream(a.qweight + int64_t(r0 + u) * N + n0)
                                  : make_uint4(0x88888888u, 0x88888888u, 0x88888888u, 0x88888888u);
      const int64_t g = r0 / rows_per_group;
      next_s = __ldg(reinterpret_cast<const uint2*>(a.scales + g * N + n0));
      next_z = __ldg(a.qzeros + g * zero_row_words + n0 / 8);
    };
    int b = b_begin + slot;
    if (b < b_end) fetch(b);
    for (; b < b_end; b += kSlots) {
      uint4 w[ROWS];
#pragma unroll
      for (int u = 0; u < ROWS; ++u) w[u] = next_w[u];
      const uint2 s = next_s;
      const uint32_t zw = next_z >> zero_shift;
      if (b + kSlots < b_end) fetch(b + kSlots);

      const int r0 = b * ROWS;
      float gacc[M][4];
#pragma unroll
      for (int m = 0; m < M; ++m)
#pragma unroll
        for (int c = 0; c < 4; ++c) gacc[m][c] = 0.f;
      if constexpr (kHalf) {
        uint32_t zlo[4], zhi[4];
        zero_addends(zw, a.zeros_minus_one, zlo, zhi);
#pragma unroll
        for (int u0 = 0; u0 < ROWS; u0 += 2) {
          // Two packed rows (16 products per lane of a half2) per chain, then into fp32: with the
          // 2^-4 folded into the weights a chain stays below 7.5 max|x|, finite for |x| < 8700.
          __half2 chain[M][4];
#pragma unroll
          for (int u = u0; u < u0 + 2; ++u) {
            const bool in_k = r0 + u < rows;
            __half2 xp[M][4];  // (x[8r+i], x[8r+i+4]) for i = 0..3, the pairs of the weight fields below
#pragma unroll
            for (int m = 0; m < M; ++m) {
              const uint4 xv = in_k ? __ldg(x4 + int64_t(m) * rows + r0 + u) : make_uint4(0, 0, 0, 0);
              xp[m][0] = as_half2(__byte_perm(xv.x, xv.z, 0x5410));
              xp[m][1] = as_half2(__byte_perm(xv.x, xv.z, 0x7632));
              xp[m][2] = as_half2(__byte_perm(xv.y, xv.w, 0x5410));
              xp[m][3] = as_half2(__byte_perm(xv.y, xv.w, 0x7632));
            }
            const uint32_t words[4] = {w[u].x, w[u].y, w[u].z, w[u].w};
#pragma unroll
            for (int c = 0; c < 4; ++c) {
              // Nibble i of a word is input channel 8r + i. Masks 0x000F000F and 0x00F000F0 on q and
              // on q >> 8 pick the pairs (0,4), (1,5), (2,6), (3,7); one HFMA2 each makes (q - z)/16.
              const uint32_t q = words[c], q8 = q >> 8;
              const __half2 d0 = __hfma2(as_half2(and_or<0x000F000Fu, 0x64006400u>(q)), k16, as_half2(zlo[c]));
              const __half2 d1 = __hfma2(as_half2(and_or<0x00F000F0u, 0x64006400u>(q)), k256, as_half2(zhi[c]));
              const __half2 d2 = __hfma2(as_half2(and_or<0x000F000Fu, 0x64006400u>(q8)), k16, as_half2(zlo[c]));
              const __half2 d3 = __hfma2(as_half2(and_or<0x00F000F0u, 0x64006400u>(q8)), k256, as_half2(zhi[c]));
#pragma unroll
              for (int m = 0; m < M; ++m) {
                __half2 t = u == u0 ? __hmul2(xp[m][0], d0) : __hfma2(xp[m][0], d0, chain[m][c]);
                t = __hfma2(xp[m][1], d1, t);
                t = __hfma2(xp[m][2], d2, t);
                chain[m][c] = __hfma2(xp[m][3], d3, t);
              }
            }
          }
#pragma unroll
          for (int m = 0; m < M; ++m)
#pragma unroll
            for (int c = 0; c < 4; ++c) {
              const float2 f = __half22float2(chain[m][c]);
              gacc[m][c] += f.x + f.y;
            }
        }
      } else {
        float bias[M], xsum[M];
#pragma unroll
        for (int m = 0; m < M; ++m) bias[m] = xsum[m] = 0.f;
#pragma unroll
        for (int u = 0; u < ROWS; ++u) {
          uint4 xv[M];
#pragma unroll
          for (int m = 0; m < M; ++m)
            xv[m] = r0 + u < rows ? __ldg(x4 + int64_t(m) * rows + r0 + u) : make_uint4(0, 0, 0, 0);
          bf16_row<M>(xv, w[u], gacc, bias, xsum);
        }
        // sum x (q - z) = gacc - 16 sum(x') - z sum(x), per column.
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          uint32_t z = (zw >> (4 * c)) & 0xFu;
          if (a.zeros_minus_one) z = (z + 1u) & 0xFu;
#pragma unroll
          for (int m = 0; m < M; ++m) gacc[m][c] -= fmaf(float(z), xsum[m], bias[m]);
        }
      }
      // The group's scales (fp16 or bf16 bits): the low half of a word is the lower column.
      const float sc[4] = {bits_to_float<T>(s.x & 0xFFFFu), bits_to_float<T>(s.x >> 16),
                           bits_to_float<T>(s.y & 0xFFFFu), bits_to_float<T>(s.y >> 16)};
#pragma unroll
      for (int m = 0; m < M; ++m)
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[m][c] = fmaf(sc[c], gacc[m][c], acc[m][c]);
    }
  }

  // The row slots of a warp hold the same columns: add them (lanes l, l + LPR, ...) into the first.
#pragma unroll
  for (int off = LPR; off < 32; off *= 2)
#pragma unroll
    for (int m = 0; m < M; ++m)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[m][c] += __shfl_xor_sync(0xFFFFFFFFu, acc[m][c], off);
  // fp16: the 16 undoes the 2^-4 folded into the weights.
  gemv::finish<M, kCols>(acc, red, &last_flag, kHalf ? 16.0f : 1.0f, reinterpret_cast<T*>(a.out), a.partial,
                         a.counters, N);
}

// 8 rows per batch when groups allow (group size -1 or a multiple of 64), else 4 (a multiple of 32);
// M > 1 also uses 4 to keep the registers of two blocks per SM.
int rows_per_batch(int64_t M, int64_t group_size, int want) {
  return M == 1 && want == 8 && (group_size < 0 || group_size % 64 == 0) ? 8 : 4;
}

// Column strips narrower than 128 are built for M = 1 only (the row the decode chain serves).
template <typename T, int ROWS>
gemv::Kernel m1_kernel(int cols) {
  switch (cols) {
    case 128: return exllamav2_gemv_kernel<T, 1, ROWS, 32>;
    case 64: return exllamav2_gemv_kernel<T, 1, ROWS, 16>;
    case 32: return exllamav2_gemv_kernel<T, 1, ROWS, 8>;
    case 16: return exllamav2_gemv_kernel<T, 1, ROWS, 4>;
    default: return nullptr;
  }
}

template <typename T>
gemv::Kernel kernel_for_type(int64_t M, int rows, int cols) {
  if (M == 1) return rows == 8 ? m1_kernel<T, 8>(cols) : rows == 4 ? m1_kernel<T, 4>(cols) : nullptr;
  if (rows != 4 || cols != kColsPerBlock) return nullptr;
  switch (M) {
    case 2: return exllamav2_gemv_kernel<T, 2, 4, 32>;
    case 3: return exllamav2_gemv_kernel<T, 3, 4, 32>;
    case 4: return exllamav2_gemv_kernel<T, 4, 4, 32>;
    default: return nullptr;
  }
}

gemv::Kernel kernel_for(int64_t M, int rows, int cols, bool bf16) {
  return bf16 ? kernel_for_type<__nv_bfloat16>(M, rows, cols) : kernel_for_type<__half>(M, rows, cols);
}

// Block width, rows a batch and K splits at M = 1. GPTQ_EXLLAMAV2_GEMV_CONFIG, "<cols>x<rows>" with
// cols 128, 64, 32 or 16 and rows 8 or 4, and an optional "s<n>" capping the splits (tuning and
// tests), overrides the default.
struct Config {
  int cols = kColsPerBlock, rows = 8;
  int64_t max_splits = 0;  // 0: no cap
};

// The default at M = 1. Layers with K <= 4096 take 32-column strips and no K split when those fill
// at most one wave: 8-row batches if there is at most one strip an SM (a block then leaves half the
// SM's registers to the next call's blocks, which prefetch behind it, common/pdl.cuh), else 4-row
// batches (76 registers, 3 blocks an SM). A row slot then has at most 4 batches, so a block's loads
// are nearly all in flight at once, and no last block adds splits after the others. Measured on the
// H100 (benchmarks/results/2026-11-23_h100_s11_gemv-cols-b_ab.txt): 4096x4096 6.4 against 6.8-7.0 us,
// 4096x11008 11.6-12.1 against 13.0. Longer K keeps 128 columns and splits: 11008x4096 took 14.0
// with 32 columns and one split against 12.9-13.0, 8192x8192 16.0-16.8 against 16.2 (no gain).
// (Groups of 32 channels force 4-row batches, too few loads in flight for one block an SM: those
// layers keep 128 columns there.)
Config default_config(int64_t K, int64_t N, int64_t group_size, bool bf16, const GemvDevice& dev) {
  const int64_t strips = (N + 31) / 32;
  if (K > 4096) return Config{};
  if (strips <= dev.sm_count) return rows_per_batch(1, group_size, 8) == 8 ? Config{32, 8, 1} : Config{};
  const int64_t slots4 = int64_t(dev.sm_count) * gemv::blocks_per_sm(kernel_for(1, 4, 32, bf16));
  if (strips <= slots4) return Config{32, 4, 1};
  return Config{};
}

Config config_for(int64_t M, int64_t K, int64_t N, int64_t group_size, bool bf16, const GemvDevice& dev) {
  static const std::pair<bool, Config> env = [] {
    const char* e = std::getenv("GPTQ_EXLLAMAV2_GEMV_CONFIG");
    Config c;
    long long s = 0;
    const int n = e == nullptr ? 0 : std::sscanf(e, "%dx%ds%lld", &c.cols, &c.rows, &s);
    c.max_splits = n == 3 ? s : 0;
    const bool ok = n >= 2 && (c.cols == 128 || c.cols == 64 || c.cols == 32 || c.cols == 16) &&
                    (c.rows == 8 || c.rows == 4) && c.max_splits >= 0;
    return std::make_pair(ok, c);
  }();
  if (M != 1) return Config{kColsPerBlock, 4, 0};
  if (env.first) return env.second;
  return default_config(K, N, group_size, bf16, dev);
}

}  // namespace

GemvPlan exllamav2_gemv_plan(int64_t M, int64_t K, int64_t N, int64_t group_size, bool bf16, const GemvDevice& dev) {
  const Config c = config_for(M, K, N, group_size, bf16, dev);
  const int rows = rows_per_batch(M, group_size, c.rows);
  const int64_t batches = (K / 8 + rows - 1) / rows;
  GemvDevice capped = dev;
  if (c.max_splits > 0) capped.max_splits = std::min(dev.max_splits, c.max_splits);
  // At least one batch for each row slot of a split.
  return gemv::make_plan(kernel_for(M, rows, c.cols, bf16), rows, batches, N, capped, kWarps * kColsPerBlock / c.cols,
                         c.cols);
}

cudaError_t launch_exllamav2_gemv(const GemvArgs& args, const GemvPlan& plan, cudaStream_t stream) {
  if (args.K % 8 != 0 || args.N % 8 != 0 || (args.group_size > 0 && args.group_size % (8 * plan.batch) != 0))
    return cudaErrorInvalidValue;
  return gemv::launch(kernel_for(args.M, plan.batch, plan.cols, args.bf16), args, plan, stream);
}

}  // namespace gptq::cuda
