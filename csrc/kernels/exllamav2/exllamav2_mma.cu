// ExLlamaV2-style GEMM for M = 1..16 rows on the tensor cores, straight from the checkpoint layout
// (4-bit, fp16, contiguous groups): the small-batch decoding range, where the half2 GEMV pays one
// HFMA2 per weight pair per row and stops being memory-bound.
//
// The weights never pass through shared memory. mma.sync.m16n8k16 takes its B operand (16 input
// channels x 8 columns) from registers: lane (g = lane / 4, q = lane % 4) supplies column g and the
// four k slots 2q, 2q + 1, 2q + 8, 2q + 9. A dot product does not depend on the order of its k terms,
// so the slots may stand for any 16 channels, provided x (operand A) is staged in the same order. We
// choose the order the checkpoint layout hands us:
//   - lane (g, q) loads 16 bytes of qweight [K/8, N]: packed row 4 it + q of the 32-channel iteration
//     it, columns 4g..4g+3 of the warp's 32. Word i holds channels 8q..8q+7 of column 4g + i, and
//     column 4g + i is column g of n8 tile i: one load feeds four tiles, and eight lanes with the same
//     q read 128 contiguous bytes;
//   - one LOP3 puts nibbles (e0, e4) of a word in a half2 as 1024 + e, another (e1, e5) as
//     1024 + 16e; an HSUB2 and an HFMA2 with 1/16 then give the exact integers q - z. (e0, e4) and
//     (e1, e5) are the B registers of k16 step 0, (e2, e6) and (e3, e7) (the word shifted by 8) those of
//     step 1, so step 0's slots 2q, 2q + 1, 2q + 8, 2q + 9 are channels 8q + 0, 4, 1, 5;
//   - x is staged per 256-channel stage in that order, as 16-byte rows for ldmatrix: one ldmatrix.x4
//     gives a step's A fragment for 16 rows.
// Products of fp16 x with integers |q - z| <= 15 are exact in the fp32 accumulators; each group's
// fp32 sums are multiplied by its scales once (C fragment columns 2q, 2q + 1 of tile i are columns
// 8q + i and 8q + 4 + i: one 16-byte load of staged scales).
//
// A block is 8 warps x 32 columns = 256 columns. Per 32 channels a lane issues one 16-byte load, eight
// LOP3 and twelve HSUB2/HFMA2, one 16-byte shared load of its zero points, two ldmatrix and eight mma; each
// lane keeps the next stage's 8 loads in flight in registers, and one barrier per stage (256
// channels, 32 KB of weights a block) hands over the double-buffered x, scales and zeros.
#include "exllamav2_launch.h"

#include <climits>

#include "common/gemv.cuh"
#include "common/mma.cuh"

namespace gptq::cuda {
namespace {

using gemv::and_or;
using gemv::as_half2;
using gemv::as_u32;
using gemv::increment_nibbles;
using gemv::kThreads;
using gemv::load_stream;

constexpr int kCols = 256;                  // columns a block: 8 warps x 32
constexpr int kStageK = 256;                // input channels a stage
constexpr int kStageRows = kStageK / 8;     // packed rows a stage
constexpr int kIters = kStageK / 32;        // 32-channel iterations a stage (4 packed rows each)
constexpr int kMaxGroups = kStageK / 32;    // groups a stage at group size 32

struct Stage {
  // x rows 0..15: [iteration][k16 step][slots 0-7 | 8-15][row ^ iteration], 16 bytes a row.
  uint4 x[kIters][2][2][16];
  __half scale[kMaxGroups][kCols];          // the stage's groups
  uint32_t zero[kMaxGroups][kCols];         // half2 (1024 + z, 1024 + z) a column (v1's z - 1 incremented)
};
static_assert(sizeof(Stage) * 2 >= 16 * kCols * sizeof(float), "the epilogue tile reuses the stages");

__global__ void __launch_bounds__(kThreads, 2) exllamav2_mma_kernel(GemvArgs a) {
  __shared__ __align__(16) Stage stages_buf[2];
  __shared__ int last_flag;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, q = lane & 3;
  const int64_t N = a.N, K = a.K;
  const int M = static_cast<int>(a.M);
  const int64_t col_base = int64_t(blockIdx.x) * kCols;
  const int rows = static_cast<int>(K / 8);
  const int num_stages = static_cast<int>((K + kStageK - 1) / kStageK);
  const int s_begin = static_cast<int>(blockIdx.y) * a.batches_per_split;
  const int s_end = min(num_stages, s_begin + a.batches_per_split);
  const int64_t gs = a.group_size;
  const bool one_group_a_stage = gs < 0 || gs >= kStageK;
  // Group sizes are -1 or powers of two >= 32 (exllamav2_mma_supports): iterations a group and the
  // stage-local group of iteration j by mask and shift.
  const int group_iter_mask = gs < 0 ? INT_MAX : static_cast<int>(gs / 32) - 1;
  const int group_iter_shift = gs < 0 ? 0 : __ffs(static_cast<int>(gs / 32)) - 1;
  const int groups_a_stage = one_group_a_stage ? 1 : static_cast<int>(kStageK / gs);
  const int64_t num_groups = gs < 0 ? 1 : (K + gs - 1) / gs;

  // Weights: packed row 32 s + 4 j + q, columns n_w..n_w+3 (N % 8 == 0: all four or none exist).
  const int64_t n_w = col_base + 32 * warp + 4 * g;
  const bool w_ok = n_w < N;
  auto fetch_w = [&](int s, int j) {
    const int r = s * kStageRows + 4 * j + q;
    return w_ok && s < s_end && r < rows ? load_stream(a.qweight + int64_t(r) * N + n_w) : make_uint4(0, 0, 0, 0);
  };

  // Staging: x chunk c = tid + 256 h (row c / 32, 8 channels 8 (c % 32)); scales and zeros of group
  // tid / 32 of the stage, columns 8 (tid % 32)..+7. Rows >= M and channels >= K stage as zero.
  uint4 st_x[2], st_s;
  uint32_t st_z;
  auto fetch_stage = [&](int s) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int c = tid + 256 * h, m = c >> 5;
      const int64_t k = int64_t(s) * kStageK + 8 * (c & 31);
      st_x[h] = m < M && s < s_end && k < K ? __ldg(reinterpret_cast<const uint4*>(a.x + m * K + k))
                                            : make_uint4(0, 0, 0, 0);
    }
    const int gl = tid >> 5;
    const int64_t n = col_base + 8 * (tid & 31);
    const bool ok = s < s_end && gl < groups_a_stage && n < N;
    const int64_t grp = min(gs < 0 ? 0 : int64_t(s) * kStageK / gs + gl, num_groups - 1);
    st_s = ok ? __ldg(reinterpret_cast<const uint4*>(a.scales + grp * N + n)) : make_uint4(0, 0, 0, 0);
    st_z = ok ? __ldg(a.qzeros + grp * (N / 8) + n / 8) : 0u;
  };
  auto store_stage = [&](Stage& S) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int c = tid + 256 * h, m = c >> 5, j = (c & 31) >> 2, w = c & 3;
      const uint4 v = st_x[h];  // channels 8w..8w+7 of iteration j: (k0 k1) (k2 k3) (k4 k5) (k6 k7)
      reinterpret_cast<uint32_t*>(&S.x[j][0][0][m ^ j])[w] = __byte_perm(v.x, v.z, 0x5410);  // (k0, k4)
      reinterpret_cast<uint32_t*>(&S.x[j][0][1][m ^ j])[w] = __byte_perm(v.x, v.z, 0x7632);  // (k1, k5)
      reinterpret_cast<uint32_t*>(&S.x[j][1][0][m ^ j])[w] = __byte_perm(v.y, v.w, 0x5410);  // (k2, k6)
      reinterpret_cast<uint32_t*>(&S.x[j][1][1][m ^ j])[w] = __byte_perm(v.y, v.w, 0x7632);  // (k3, k7)
    }
    const int gl = tid >> 5, cw = tid & 31;
    if (gl < groups_a_stage) {
      *reinterpret_cast<uint4*>(&S.scale[gl][8 * cw]) = st_s;
      // Each column's zero point as the half2 the decode subtracts: once a stage instead of once an
      // iteration (the shifts and PRMTs filled the integer pipe).
      const uint32_t zw = a.zeros_minus_one ? increment_nibbles(st_z) : st_z;
      uint32_t zl[8];
#pragma unroll
      for (int c = 0; c < 8; ++c) zl[c] = __byte_perm((zw >> (4 * c)) & 0xFu, 0x64u, 0x4040);  // (1024 + z) twice
      *reinterpret_cast<uint4*>(&S.zero[gl][8 * cw]) = make_uint4(zl[0], zl[1], zl[2], zl[3]);
      *reinterpret_cast<uint4*>(&S.zero[gl][8 * cw + 4]) = make_uint4(zl[4], zl[5], zl[6], zl[7]);
    }
  };

  // The first stage's weights into L2 while the kernel before may still run (common/pdl.cuh).
#pragma unroll
  for (int j = 0; j < kIters; ++j) {
    const int r = s_begin * kStageRows + 4 * j + q;
    if (w_ok && s_begin < s_end && r < rows) pdl::prefetch_l2(a.qweight + int64_t(r) * N + n_w);
  }
  pdl::wait();
  pdl::launch_dependents();

  uint4 ring[kIters];
#pragma unroll
  for (int j = 0; j < kIters; ++j) ring[j] = fetch_w(s_begin, j);
  fetch_stage(s_begin);
  store_stage(stages_buf[0]);
  __syncthreads();

  float acc[4][4] = {}, grp[4][4] = {};
  const __half2 k16 = as_half2(0x2C002C00u);   // 1/16
  const __half2 k960 = as_half2(0x63806380u);  // 960 = 1024 - 64
  for (int s = s_begin; s < s_end; ++s) {
    const Stage& S = stages_buf[(s - s_begin) & 1];
    fetch_stage(s + 1);
#pragma unroll
    for (int j = 0; j < kIters; ++j) {
      const uint4 w = ring[j];
      ring[j] = fetch_w(s + 1, j);
      const int lg = one_group_a_stage ? 0 : j >> group_iter_shift;
      uint32_t af[2][4];
#pragma unroll
      for (int step = 0; step < 2; ++step)
        ldmatrix_x4(af[step], &S.x[j][step][lane >> 4][((lane & 7) + 8 * ((lane >> 3) & 1)) ^ j]);
      // Zero points of columns n_w..n_w+3 as (1024 + z) half2s.
      const uint4 zq = *reinterpret_cast<const uint4*>(&S.zero[lg][32 * warp + 4 * g]);
      const uint32_t zls[4] = {zq.x, zq.y, zq.z, zq.w};
      const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const __half2 zl = as_half2(zls[i]);  // (1024 + z) twice
        const __half2 zh = __hsub2(k960, zl);  // -(64 + z)
        const uint32_t v = words[i], v8 = v >> 8;
        const uint32_t b0[2] = {as_u32(__hsub2(as_half2(and_or<0x000F000Fu, 0x64006400u>(v)), zl)),      // e0, e4
                                as_u32(__hfma2(as_half2(and_or<0x00F000F0u, 0x64006400u>(v)), k16, zh))};  // e1, e5
        const uint32_t b1[2] = {as_u32(__hsub2(as_half2(and_or<0x000F000Fu, 0x64006400u>(v8)), zl)),     // e2, e6
                                as_u32(__hfma2(as_half2(and_or<0x00F000F0u, 0x64006400u>(v8)), k16, zh))};  // e3, e7
        mma_16816<__half>(grp[i], af[0], b0);
        mma_16816<__half>(grp[i], af[1], b1);
      }
      // End of a group (or of the block's K range): fold the group's sums with its scales.
      const int it = s * kIters + j;
      if (((it + 1) & group_iter_mask) == 0 || (s == s_end - 1 && j == kIters - 1)) {
        const uint4 sq = *reinterpret_cast<const uint4*>(&S.scale[lg][32 * warp + 8 * q]);
        const float2 s01 = __half22float2(as_half2(sq.x)), s23 = __half22float2(as_half2(sq.y));
        const float2 s45 = __half22float2(as_half2(sq.z)), s67 = __half22float2(as_half2(sq.w));
        const float lo[4] = {s01.x, s01.y, s23.x, s23.y}, hi[4] = {s45.x, s45.y, s67.x, s67.y};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          acc[i][0] = fmaf(lo[i], grp[i][0], acc[i][0]);
          acc[i][1] = fmaf(hi[i], grp[i][1], acc[i][1]);
          acc[i][2] = fmaf(lo[i], grp[i][2], acc[i][2]);
          acc[i][3] = fmaf(hi[i], grp[i][3], acc[i][3]);
#pragma unroll
          for (int e = 0; e < 4; ++e) grp[i][e] = 0.f;
        }
      }
    }
    if (s + 1 < s_end) store_stage(stages_buf[(s + 1 - s_begin) & 1]);
    __syncthreads();
  }

  // Fragments -> [16, 256] fp32 tile over the stage buffers (every warp is past the last barrier).
  float* tile = reinterpret_cast<float*>(&stages_buf[0]);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int c0 = 32 * warp + 8 * q + i, c1 = c0 + 4;
    tile[g * kCols + c0] = acc[i][0];
    tile[g * kCols + c1] = acc[i][1];
    tile[(g + 8) * kCols + c0] = acc[i][2];
    tile[(g + 8) * kCols + c1] = acc[i][3];
  }
  gemv::store_tile<kCols>(tile, M, &last_flag, a.out, a.partial, a.counters, a.M, N);
}

}  // namespace

GemvPlan exllamav2_mma_plan(int64_t M, int64_t K, int64_t N, const GemvDevice& dev) {
  (void)M;
  const int64_t num_stages = (K + kStageK - 1) / kStageK;
  // At most 8 splits: each adds M x N fp32 partials, written and read back. On the H100 the cap took
  // 11008x4096 at m = 16 from 37.0 to 27.0 us and 4096x4096 from 20.3 to 18.8 us (16 splits before),
  // and changed no other real shape by more than 1 us (2026-11-22_h100_splits_bench_kernels_*.txt).
  GemvDevice capped = dev;
  capped.max_splits = std::min<int64_t>(dev.max_splits, 8);
  return gemv::make_plan(exllamav2_mma_kernel, kStageRows, num_stages, N, capped, 1, kCols);
}

cudaError_t launch_exllamav2_mma(const GemvArgs& args, const GemvPlan& plan, cudaStream_t stream) {
  if (!exllamav2_mma_supports(args.M, args.group_size) || args.K % 8 != 0 || args.N % 8 != 0)
    return cudaErrorInvalidValue;
  if (args.bf16) return cudaErrorInvalidValue;  // fp16 only
  return gemv::launch(exllamav2_mma_kernel, args, plan, stream);
}

}  // namespace gptq::cuda
