// ExLlamaV2-style GEMM for M = 1..16 rows on the tensor cores, straight from the checkpoint layout
// (4-bit, fp16, contiguous groups of a multiple of 64 or one group): the small-batch decoding range,
// where the half2 GEMV pays one HFMA2 per weight pair per row and stops being memory-bound.
//
// Instead of repacking the weights at load (Marlin), each block transposes them on the fly through
// shared memory. A block owns 128 columns and walks its K split in steps of 64 input channels:
//   1. decode: warp w takes packed row w of the step (8 channels) and, as in the GEMV, lane l its 4
//      columns (one 16-byte load); one LOP3 + one HSUB2/HFMA2 per pair gives the exact integers
//      q - z as half2 (k, k+4) pairs, stored as one 16-byte chunk per column: B^T [128 n][64 k];
//   2. x [M <= 16, 64] is staged with its 8-channel chunks permuted the same way (k0 k4 k1 k5 ...), so
//      the dot product over k is unchanged;
//   3. mma: warp w owns columns 16w..16w+15 (two n8 tiles) and runs 4 k16 x 2 n8 mma.sync.m16n8k16
//      per step, ldmatrix feeding A and B. Products of fp16 x with small integers accumulate exactly
//      in fp32; the group scale multiplies the fp32 group sums once per group.
// Per 16 bytes of weights a lane spends about the GEMV's decode plus 1 STS, 2 LDSM and 2 MMA, so the
// cost no longer grows with M. Loads: each warp keeps kDepth steps of its rows in flight in registers.
// Shared memory chunks are XOR-swizzled so that both the decode stores (8 lanes: columns 4l + c) and
// the ldmatrix rows (8 consecutive columns) hit 8 distinct 16-byte bank groups.
#include "exllamav2_launch.h"

#include "common/gemv.cuh"
#include "common/mma.cuh"

namespace gptq::cuda {
namespace {

using gemv::and_or;
using gemv::as_half2;
using gemv::as_u32;
using gemv::kColsPerBlock;
using gemv::kThreads;
using gemv::kWarps;
using gemv::load_stream;

constexpr int kStepK = 64;  // input channels per step: one packed row per warp
constexpr int kDepth = 6;   // steps of weights in flight per warp (16 bytes per lane each)

// Physical 16-byte chunk of (column n, chunk c) in B^T: distinct over 8 lanes' columns 4l + const and
// over 8 consecutive columns.
__device__ __forceinline__ int b_chunk(int n, int c) { return c ^ (((n >> 2) ^ n) & 7); }

__global__ void __launch_bounds__(kThreads, 2) exllamav2_mma_kernel(GemvArgs a) {
  __shared__ __align__(16) uint4 sB[2][kColsPerBlock * 8];  // [buffer][column * 8 + chunk]: 16 KB each
  __shared__ __align__(16) uint4 sX[2][16 * 8];             // [buffer][row * 8 + chunk]
  __shared__ int last_flag;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int64_t N = a.N, K = a.K;
  const int M = static_cast<int>(a.M);
  const int64_t col_base = int64_t(blockIdx.x) * kColsPerBlock;
  const int rows = static_cast<int>(K / 8);
  const int steps = (rows + 7) / 8;
  const int s_begin = static_cast<int>(blockIdx.y) * a.batches_per_split;
  const int s_end = min(steps, s_begin + a.batches_per_split);
  const int steps_per_group = a.group_size < 0 ? max(steps, 1) : static_cast<int>(a.group_size / kStepK);

  // Decode role: packed row 8s + warp, columns n_dec..n_dec+3.
  const int64_t n_dec = col_base + lane * 4;
  const bool dec_ok = n_dec < N;
  const int zero_shift = 4 * static_cast<int>(n_dec & 7);
  // MMA role: columns col_base + 16 warp + 8 j + 2 t (+1) of n8 tile j, rows g and g + 8.
  const int g = lane >> 2, t = lane & 3;
  const int64_t n_mma = col_base + 16 * warp + 2 * t;

  uint4 ring_w[kDepth];
  uint32_t ring_z[kDepth];
  auto fetch = [&](int s, uint4& w, uint32_t& z) {
    const int r = s * 8 + warp;
    w = dec_ok && s < s_end && r < rows ? load_stream(a.qweight + int64_t(r) * N + n_dec) : make_uint4(0, 0, 0, 0);
    const int64_t grp = min(s, steps - 1) / steps_per_group;
    z = dec_ok && s < s_end ? __ldg(a.qzeros + grp * (N / 8) + n_dec / 8) : 0u;
  };
  auto fetch_scales = [&](int s, uint32_t (&sc)[2]) {
    const int64_t grp = min(s, steps - 1) / steps_per_group;
#pragma unroll
    for (int j = 0; j < 2; ++j)
      sc[j] = n_mma + 8 * j < N ? __ldg(reinterpret_cast<const uint32_t*>(a.scales + grp * N + n_mma + 8 * j)) : 0u;
  };
#pragma unroll
  for (int i = 0; i < kDepth; ++i) fetch(s_begin + i, ring_w[i], ring_z[i]);

  // x rows 0..15 of a step: thread tid < 128 loads row tid / 8, chunk tid % 8, two steps ahead (the
  // load would otherwise sit on the critical path of every step, between two barriers).
  const int xm = tid >> 3, xc = tid & 7;
  auto fetch_x = [&](int s) {
    const int64_t k = int64_t(s) * kStepK + xc * 8;
    return tid < 128 && xm < M && s < s_end && k < K ? __ldg(reinterpret_cast<const uint4*>(a.x + xm * K + k))
                                                     : make_uint4(0, 0, 0, 0);
  };
  uint4 ring_x[2] = {fetch_x(s_begin), fetch_x(s_begin + 1)};

  float acc[2][4] = {}, grp_acc[2][4] = {};
  uint32_t sc_cur[2] = {0u, 0u}, sc_next[2];
  fetch_scales(s_begin, sc_next);
  // The finished group's fp32 sums times its scales (fragment element e: column 2t + (e & 1)).
  auto fold_group = [&]() {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const float s_lo = __low2float(as_half2(sc_cur[j])), s_hi = __high2float(as_half2(sc_cur[j]));
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        acc[j][e] = fmaf(e & 1 ? s_hi : s_lo, grp_acc[j][e], acc[j][e]);
        grp_acc[j][e] = 0.f;
      }
    }
  };
  const __half2 k16 = as_half2(0x2C002C00u);  // 1/16

  for (int s0 = s_begin; s0 < s_end; s0 += kDepth) {
#pragma unroll
    for (int i = 0; i < kDepth; ++i) {
      const int s = s0 + i;
      if (s >= s_end) break;
      const int buf = (s - s_begin) & 1;
      const uint4 w = ring_w[i];
      const uint32_t zw = ring_z[i] >> zero_shift;
      fetch(s + kDepth, ring_w[i], ring_z[i]);

      // x rows 0..15 of the step, chunks permuted to (k0 k4 k1 k5 k2 k6 k3 k7); rows >= M are zero.
      const uint4 v = ring_x[i & 1];
      ring_x[i & 1] = fetch_x(s + 2);
      if (tid < 128) {
        const int m = xm, c = xc;
        uint4 p;
        p.x = __byte_perm(v.x, v.z, 0x5410);
        p.y = __byte_perm(v.x, v.z, 0x7632);
        p.z = __byte_perm(v.y, v.w, 0x5410);
        p.w = __byte_perm(v.y, v.w, 0x7632);
        sX[buf][m * 8 + (c ^ (m & 7))] = p;
      }
      // Decode packed row 8s + warp into chunk `warp` of the lane's 4 columns: (q - z) exactly.
      {
        const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          uint32_t z = (zw >> (4 * c)) & 0xFu;
          if (a.zeros_minus_one) z = (z + 1u) & 0xFu;  // GPTQ v1 stores z - 1
          const uint32_t zlo = 0x6400u | z;                                        // 1024 + z
          const uint32_t zhi = as_u32(__float2half2_rn(-(64.0f + float(z))));     // -(64 + z)
          const __half2 zl = as_half2(zlo | (zlo << 16)), zh = as_half2(zhi);
          const uint32_t q = words[c], q8 = q >> 8;
          uint4 d;
          d.x = as_u32(__hsub2(as_half2(and_or<0x000F000Fu, 0x64006400u>(q)), zl));        // (k0, k4)
          d.y = as_u32(__hfma2(as_half2(and_or<0x00F000F0u, 0x64006400u>(q)), k16, zh));   // (k1, k5)
          d.z = as_u32(__hsub2(as_half2(and_or<0x000F000Fu, 0x64006400u>(q8)), zl));       // (k2, k6)
          d.w = as_u32(__hfma2(as_half2(and_or<0x00F000F0u, 0x64006400u>(q8)), k16, zh));  // (k3, k7)
          const int n = lane * 4 + c;
          sB[buf][n * 8 + b_chunk(n, warp)] = d;
        }
      }
      __syncthreads();

      // Group boundary: fold the finished group's sums with its scales.
      if (s == s_begin || s % steps_per_group == 0) {
        fold_group();
#pragma unroll
        for (int j = 0; j < 2; ++j) sc_cur[j] = sc_next[j];
        fetch_scales((s / steps_per_group + 1) * steps_per_group, sc_next);
      }
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        uint32_t af[4], bf[4];
        {
          const int r = (lane & 7) + 8 * ((lane >> 3) & 1), c = 2 * kk + (lane >> 4);
          ldmatrix_x4(af, &sX[buf][r * 8 + (c ^ (r & 7))]);
        }
        {
          const int n = 16 * warp + 8 * (lane >> 4) + (lane & 7), c = 2 * kk + ((lane >> 3) & 1);
          ldmatrix_x4(bf, &sB[buf][n * 8 + b_chunk(n, c)]);
        }
        const uint32_t b0[2] = {bf[0], bf[1]}, b1[2] = {bf[2], bf[3]};
        mma_16816<__half>(grp_acc[0], af, b0);
        mma_16816<__half>(grp_acc[1], af, b1);
      }
    }
  }
  fold_group();

  // Fragments -> [16, 128] fp32 tile (in sB, free once every warp is past its last ldmatrix).
  __syncthreads();
  float* tile = reinterpret_cast<float*>(&sB[0][0]);
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int cl = 16 * warp + 8 * j + 2 * t;
    tile[g * kColsPerBlock + cl] = acc[j][0];
    tile[g * kColsPerBlock + cl + 1] = acc[j][1];
    tile[(g + 8) * kColsPerBlock + cl] = acc[j][2];
    tile[(g + 8) * kColsPerBlock + cl + 1] = acc[j][3];
  }
  gemv::store_tile(tile, M, &last_flag, a.out, a.partial, a.counters, a.M, N);
}

}  // namespace

GemvPlan exllamav2_mma_plan(int64_t M, int64_t K, int64_t N, int sm_count) {
  (void)M;
  const int64_t steps = (K / 8 + 7) / 8;
  // At least kDepth steps a split, so the ring of loads in flight is filled.
  return gemv::make_plan(exllamav2_mma_kernel, 8, steps, N, sm_count, kDepth);
}

cudaError_t launch_exllamav2_mma(const GemvArgs& args, const GemvPlan& plan, cudaStream_t stream) {
  if (!exllamav2_mma_supports(args.M, args.group_size) || args.K % 8 != 0 || args.N % 8 != 0)
    return cudaErrorInvalidValue;
  return gemv::launch(exllamav2_mma_kernel, args, plan, stream);
}

}  // namespace gptq::cuda
