// The epilogue shared by the AutoGPTQ-style tensor-core GEMVs (autogptq_tcgemv3.cu for 3 bits,
// autogptq_tcgemv28.cu for 2 and 8 bits): both split a block into WC warp columns of 32 features and
// K_WARPS = 8 / WC warps along K, and give lane (g, q) of a warp the C fragments of two 16-feature
// tiles (pt = 0, 1) for NT token tiles of 8.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "common/gemv.cuh"
#include "common/pdl.cuh"

namespace gptq::cuda::tcgemv {

// Shared memory of the epilogue: the K-warp tree's buffers [K_WARPS / 2][8 NT][32 WC] and the
// split-K flag.
template <int NT, int WC>
struct Smem {
  static constexpr int kKWarps = gemv::kWarps / WC;
  static_assert(kKWarps >= 2 && (kKWarps & (kKWarps - 1)) == 0, "a power-of-two tree of K warps");
  float red[kKWarps / 2][8 * NT][32 * WC];
  int last_flag;
};

// Zeroes the C fragments acc[pt][nt][i].
template <int NT>
__device__ __forceinline__ void zero(float (&acc)[2][NT][4]) {
#pragma unroll
  for (int pt = 0; pt < 2; ++pt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[pt][nt][i] = 0.f;
}

// Both kernels give q-lane q the LR consecutive packed rows (4 b + q) LR .. + LR - 1 of batch b (a
// 3-bit period is LR = 3 rows), for 4 adjacent features from f0 (one 16-byte load a row).

// The rows of the first two batches of K warp kw into L2, while the kernel before may still run
// (before pdl::wait, common/pdl.cuh).
template <int LR>
__device__ __forceinline__ void prefetch_rows(const uint32_t* qweight, int64_t N, int64_t f0, int rows, int b_begin,
                                              int b_end, int kw, int k_warps, int q) {
  for (int b = b_begin + kw; b < min(b_end, b_begin + kw + 2 * k_warps); b += k_warps)
#pragma unroll
    for (int u = 0; u < LR; ++u) {
      const int r = (4 * b + q) * LR + u;
      if (r < rows) pdl::prefetch_l2(qweight + int64_t(r) * N + f0);
    }
}

// The rows of batch b into w; rows from `rows` on (and all where !ok) read as 0, against x = 0 there.
template <int LR>
__device__ __forceinline__ void load_rows(uint4 (&w)[LR], const uint32_t* qweight, int64_t N, int64_t f0, int rows,
                                          int b, int q, bool ok) {
  const int r0 = (4 * b + q) * LR;
#pragma unroll
  for (int u = 0; u < LR; ++u)
    w[u] = ok && r0 + u < rows ? gemv::load_stream(qweight + int64_t(r0 + u) * N + f0) : make_uint4(0, 0, 0, 0);
}

// Adds the K warps of each warp column in a fixed tree (K warp kw += kw + h for h = K_WARPS / 2, ...,
// 1), so the result does not depend on timing, then writes the block's [M, 32 WC] tile
// (gemv::store_tile, which also adds the K splits). acc[pt][nt][i] of lane (g, q) in warp column wc:
// feature 32 wc + 4 g + 2 pt + (i >> 1) of the block, token 8 nt + 2 q + (i & 1).
template <int NT, int WC>
__device__ __forceinline__ void reduce_and_store(float (&acc)[2][NT][4], Smem<NT, WC>& sm, int M, __half* out,
                                                 float* partial, int* counters, int64_t N) {
  constexpr int kKWarps = Smem<NT, WC>::kKWarps;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
  const int wc = warp % WC, kw = warp / WC;
  auto each = [&](float(*buf)[32 * WC], auto&& op) {
#pragma unroll
    for (int pt = 0; pt < 2; ++pt)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) op(buf[8 * nt + 2 * q + (i & 1)][wc * 32 + 4 * g + 2 * pt + (i >> 1)], acc[pt][nt][i]);
  };
  for (int h = kKWarps / 2; h >= 1; h /= 2) {
    if (kw >= h && kw < 2 * h) each(sm.red[kw - h], [](float& slot, float v) { slot = v; });
    __syncthreads();
    if (kw < h) each(sm.red[kw], [](float slot, float& v) { v += slot; });
    __syncthreads();
  }
  if (kw == 0) each(sm.red[0], [](float& slot, float v) { slot = v; });
  gemv::store_tile<32 * WC>(&sm.red[0][0][0], M, &sm.last_flag, out, partial, counters, M, N);
}

}  // namespace gptq::cuda::tcgemv
