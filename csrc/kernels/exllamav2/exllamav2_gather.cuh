// Device side of the act-order gather: channel k of a token's gathered row is x[perm[k]] (the rows of
// the weights were sorted by group at load, gptq::exllamav2_prepare). Used by the gather kernel in
// front of the GEMVs (exllamav2_gather.cu) and by the Hopper GEMM's x staging (exllamav2_wgmma_sm90a.cu).
//
// Why through shared memory. perm scatters a row's channels over the whole row, so loading x[perm[k]]
// straight from global memory makes every warp load touch 32 different sectors. A block therefore
// copies its token's row into shared memory with 16-byte loads first (K x 2 bytes, at most
// kMaxSmemK channels; longer rows gather from global memory) and gathers from there, where 32 random
// 2-byte reads cost a few bank conflicts. perm (written at load) is prefetched into L2 before the
// kernel's griddepcontrol.wait, so its loads after the wait overlap the row's. In one run on the H100
// the Hopper GEMM on 8192x28672 at m = 64 took 81.9 us against 84.3-89.8 gathering from global
// memory (72.8 without act-order; benchmarks/results/2026-11-22_h100_s7_gather-smem_ab_*).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/pdl.cuh"

namespace gptq::cuda::gather {

// Blocks of up to kThreads threads (block_threads), one chunk of 8 channels a thread (grid.y blocks
// cover a token's row, grid.x runs over the tokens): a thread's perm entries are loaded before the
// row's barrier and overlap the row's loads.
constexpr int kThreads = 1024;
constexpr uint32_t kNaN = 0x7FFF;       // NaN in fp16 (exponent 0x1F) and in bf16 (exponent 0xFF)
constexpr int64_t kMaxSmemK = 65536;  // 128 KB of shared memory a block

// Threads a block for `chunks` chunks of 8 channels a token: all of them up to kThreads (whole warps),
// so that short rows leave no thread idle (a 4096-channel row: 512).
inline int block_threads(int64_t chunks) {
  return static_cast<int>(chunks >= kThreads ? kThreads : (chunks + 31) / 32 * 32);
}

// Before pdl::wait(): this block's share of perm's 128-byte lines into L2 (the blocks of the grid
// split them; reading perm itself must wait, common/pdl.cuh).
__device__ __forceinline__ void prefetch_perm(const int32_t* perm, int64_t K) {
  const int64_t blocks = int64_t(gridDim.x) * gridDim.y, b = int64_t(blockIdx.y) * gridDim.x + blockIdx.x;
  for (int64_t k = (b * blockDim.x + threadIdx.x) * 32; k < K; k += blocks * blockDim.x * 32) pdl::prefetch_l2(perm + k);
}

// A token row x [K] (K % 8 == 0, K <= kMaxSmemK, 16-byte aligned) into shared memory `row` by the
// threads of the block (block_threads(K / 8) of them, so at most kPer chunks each), every load issued
// before the first store, then a block barrier.
__device__ __forceinline__ void load_row(const uint16_t* __restrict__ x, uint16_t* row, int64_t K) {
  constexpr int kPer = static_cast<int>(kMaxSmemK / 8 / kThreads);
  const uint4* src = reinterpret_cast<const uint4*>(x);
  uint4* dst = reinterpret_cast<uint4*>(row);
  const int chunks = static_cast<int>(K / 8);
  uint4 v[kPer];
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    const int i = static_cast<int>(threadIdx.x + j * blockDim.x);
    if (i < chunks) v[j] = __ldg(src + i);
  }
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    const int i = static_cast<int>(threadIdx.x + j * blockDim.x);
    if (i < chunks) dst[i] = v[j];
  }
  __syncthreads();
}

// perm[k0 .. k0 + 7] (k0 % 8 == 0, perm 16-byte aligned): two 16-byte loads.
struct Perm8 {
  int4 lo, hi;
};
__device__ __forceinline__ Perm8 load_perm8(const int32_t* __restrict__ perm, int64_t k0) {
  return {__ldg(reinterpret_cast<const int4*>(perm + k0)), __ldg(reinterpret_cast<const int4*>(perm + k0 + 4))};
}

// 8 channels of the gathered row as 16 bytes: src[p[j]], src being the row in shared or global memory;
// NaN for an entry outside [0, K), so a corrupt perm shows in the output instead of a read outside
// the row.
__device__ __forceinline__ uint4 gather8(const uint16_t* src, const Perm8& pp, int64_t K) {
  const int p[8] = {pp.lo.x, pp.lo.y, pp.lo.z, pp.lo.w, pp.hi.x, pp.hi.y, pp.hi.z, pp.hi.w};
  uint32_t h[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) h[j] = p[j] >= 0 && p[j] < K ? uint32_t(src[p[j]]) : kNaN;
  return make_uint4(h[0] | h[1] << 16, h[2] | h[3] << 16, h[4] | h[5] << 16, h[6] | h[7] << 16);
}

// The whole gather of a dependent-launch kernel, block-wide (every thread of the block calls it, with
// the same xr): prefetch perm into L2, trigger the kernel behind (it may start prefetching its weights
// at once, as behind the Hopper GEMM's x staging; common/pdl.cuh), wait for the kernel in front (x is
// its output), then return chunk c (channels 8c..8c+7) of the gathered row of xr (K channels, K % 8
// == 0), or zeros where c >= K / 8 or xr is null (padding tokens). kSmem: through shared memory
// `smem` (K x 2 bytes, K <= kMaxSmemK), else straight from global memory.
template <bool kSmem>
__device__ __forceinline__ uint4 gathered_chunk(const uint16_t* xr, const int32_t* __restrict__ perm, int64_t K,
                                                int64_t c, uint4* smem) {
  prefetch_perm(perm, K);
  pdl::launch_dependents();
  pdl::wait();
  if (xr == nullptr) return make_uint4(0, 0, 0, 0);
  const bool in_k = c < K / 8;
  const Perm8 p = in_k ? load_perm8(perm, 8 * c) : Perm8{};
  const uint16_t* src = xr;
  if constexpr (kSmem) {
    uint16_t* row = reinterpret_cast<uint16_t*>(smem);
    load_row(xr, row, K);
    src = row;
  }
  return in_k ? gather8(src, p, K) : make_uint4(0, 0, 0, 0);
}

}  // namespace gptq::cuda::gather
