// The epilogue shared by the AutoGPTQ-style tensor-core GEMVs (autogptq_tcgemv3.cu for 3 bits,
// autogptq_tcgemv28.cu for 2 and 8 bits): both split a block into WC warp columns of 32 features and
// K_WARPS = 8 / WC warps along K, and give lane (g, q) of a warp the C fragments of two 16-feature
// tiles (pt = 0, 1) for NT token tiles of 8.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "common/gemv.cuh"

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
