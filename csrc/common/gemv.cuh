// Pieces shared by the split-K GEMVs (csrc/kernels/exllamav2, the 3-bit half2 GEMV in
// csrc/kernels/autogptq): streaming loads, the magic-number bit-field merge, the epilogue that
// reduces a block's warps and then the K splits in one kernel, and the plan and launch.
#pragma once

#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <utility>

#include "common/dtype.cuh"
#include "common/gemv_launch.h"
#include "common/pdl.cuh"

namespace gptq::cuda::gemv {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kColsPerBlock = 128;  // a lane owns 4 adjacent columns

// (a & MASK) | BITS_SET as one LOP3: written in PTX because the compiler otherwise splits it into
// two instructions (a LOP3 takes a single immediate operand).
template <uint32_t MASK, uint32_t BITS_SET>
__device__ __forceinline__ uint32_t and_or(uint32_t a) {
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(d) : "r"(a), "n"(MASK), "n"(BITS_SET));
  return d;
}
__device__ __forceinline__ __half2 as_half2(uint32_t v) { return *reinterpret_cast<__half2*>(&v); }
__device__ __forceinline__ uint32_t as_u32(__half2 v) { return *reinterpret_cast<uint32_t*>(&v); }

// z + 1 (mod 16) in every nibble of a 4-bit zero-point word: GPTQ v1 checkpoints store z - 1.
__device__ __forceinline__ uint32_t increment_nibbles(uint32_t w) {
  return ((w & 0x77777777u) + 0x11111111u) ^ (w & 0x88888888u);
}

// Weights are read once: no L1 allocation, and a 256-byte L2 prefetch for the rest of the row run.
__device__ __forceinline__ uint4 load_stream(const uint32_t* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// Writes a block's finished [rows, COLS] fp32 tile (shared memory, row stride COLS) to out [M, N] (fp16
// or bf16): with
// one split (gridDim.y == 1) directly; else as fp32 partial [splits, M, N], after which the last block
// of the column strip to arrive (counters[blockIdx.x], left at zero again) adds the splits in split
// order, so the result does not depend on the order in which blocks finish. Starts with a barrier.
// (Adding the splits through a thread-block cluster's shared memory instead, with no workspace and no
// counters, was slower on the H100: 28672x8192 m = 1 took 62.6 against 45.9 us with the same 4
// splits; benchmarks/results/2026-11-22_h100_clusters_bench_kernels.txt.)
template <int COLS = kColsPerBlock, typename T>
__device__ __forceinline__ void store_tile(const float* tile, int rows, int* last_flag, T* __restrict__ out,
                                           float* __restrict__ partial, int* __restrict__ counters, int64_t M,
                                           int64_t N) {
  __syncthreads();
  const int t = threadIdx.x;
  const int64_t col_base = int64_t(blockIdx.x) * COLS;
  const bool single = gridDim.y == 1;
  for (int e = t; e < rows * COLS; e += kThreads) {  // entry e: row e / COLS, column e % COLS
    const int rm = e / COLS, cc = e % COLS;
    if (col_base + cc >= N) continue;
    if (single) {
      out[rm * N + col_base + cc] = from_float<T>(tile[e]);
    } else {
      partial[(int64_t(blockIdx.y) * M + rm) * N + col_base + cc] = tile[e];
    }
  }
  if (single) return;
  __threadfence();
  __syncthreads();
  if (t == 0) *last_flag = atomicAdd(counters + blockIdx.x, 1) == int(gridDim.y) - 1;
  __syncthreads();
  if (!*last_flag) return;
  __threadfence();
  for (int e = t; e < rows * COLS; e += kThreads) {
    const int rm = e / COLS, cc = e % COLS;
    if (col_base + cc >= N) continue;
    float total = 0.f;
    for (int y = 0; y < int(gridDim.y); ++y) total += __ldcg(partial + (int64_t(y) * M + rm) * N + col_base + cc);
    out[rm * N + col_base + cc] = from_float<T>(total);
  }
  if (t == 0) counters[blockIdx.x] = 0;  // ready for the next call
}

// Block epilogue of the GEMVs. acc[m][c] is this lane's sum for row m, column COLS * blockIdx.x +
// 4 * lane + c, over its share of the block's K split (lanes 0 .. COLS/4 - 1 hold a warp's sums; with
// COLS < 128 the other lanes' are not read); `scale` multiplies the final sums. The warps are added
// through shared memory red [kWarps][M][COLS] (the sums land in red[0]), then store_tile.
template <int M, int COLS = kColsPerBlock, typename T>
__device__ __forceinline__ void finish(const float (&acc)[M][4], float (*red)[M][COLS], int* last_flag,
                                       float scale, T* __restrict__ out, float* __restrict__ partial,
                                       int* __restrict__ counters, int64_t N) {
  static_assert(COLS % 4 == 0 && COLS <= kColsPerBlock, "a lane holds 4 columns");
  const int t = threadIdx.x, warp = t >> 5, lane = t & 31;
  if (lane < COLS / 4) {
#pragma unroll
    for (int m = 0; m < M; ++m)
      *reinterpret_cast<float4*>(&red[warp][m][lane * 4]) = make_float4(acc[m][0], acc[m][1], acc[m][2], acc[m][3]);
  }
  __syncthreads();
  for (int e = t; e < M * COLS; e += kThreads) {
    const int rm = e / COLS, cc = e % COLS;
    float v = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) v += red[w][rm][cc];
    red[0][rm][cc] = v * scale;  // only this thread reads or writes entry e
  }
  store_tile<COLS>(&red[0][0][0], M, last_flag, out, partial, counters, M, N);
}

using Kernel = void (*)(GemvArgs);

// Resident blocks per SM of `kernel` (kThreads threads, static shared memory only) on the current
// device, queried once per device and kernel.
inline int blocks_per_sm(Kernel kernel) {
  static std::mutex mu;
  static std::map<std::pair<int, Kernel>, int> cache;
  int dev = 0;
  cudaGetDevice(&dev);
  std::lock_guard<std::mutex> lock(mu);
  int& c = cache[{dev, kernel}];
  if (c == 0) {
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&c, kernel, kThreads, 0) != cudaSuccess) {
      (void)cudaGetLastError();
    }
    c = std::max(c, 1);
  }
  return c;
}

// Plan of `kernel` over `batches` batches along K and N columns, `cols` columns a block: the splits
// are one wave of resident blocks (measured best on the H100 for every real shape: fewer splits starve
// the SMs, more add partial traffic and shorten each warp's pipeline), with at least `min_batches`
// batches a split.
inline GemvPlan make_plan(Kernel kernel, int batch, int64_t batches, int64_t N, const GemvDevice& dev,
                          int64_t min_batches, int cols = kColsPerBlock) {
  GemvPlan p;
  p.batch = batch;
  p.cols = cols;
  p.col_blocks = (N + cols - 1) / cols;
  p.blocks_per_sm = blocks_per_sm(kernel);
  const int64_t slots = int64_t(std::max(dev.sm_count, 1)) * p.blocks_per_sm;
  int64_t splits = std::max<int64_t>(1, slots / std::max<int64_t>(p.col_blocks, 1));
  splits = std::min<int64_t>(splits, std::max<int64_t>(1, batches / min_batches));
  splits = std::min<int64_t>(splits, std::max<int64_t>(1, dev.max_splits));
  p.batches_per_split = std::max<int64_t>(1, (batches + splits - 1) / splits);
  p.splits = std::max<int64_t>(1, (batches + p.batches_per_split - 1) / p.batches_per_split);
  return p;
}

// Launches `kernel` on the plan's grid (nullptr: a case no kernel takes), as a dependent launch
// (common/pdl.cuh) unless `dependent` is false.
inline cudaError_t launch(Kernel kernel, const GemvArgs& args, const GemvPlan& plan, cudaStream_t stream,
                          bool dependent = true) {
  if (kernel == nullptr) return cudaErrorInvalidValue;
  if (args.N == 0) return cudaSuccess;
  if (plan.splits > 65535 || (plan.splits > 1 && (args.partial == nullptr || args.counters == nullptr)))
    return cudaErrorInvalidValue;
  GemvArgs a = args;
  a.batches_per_split = static_cast<int>(plan.batches_per_split);
  const dim3 grid(static_cast<unsigned>(plan.col_blocks), static_cast<unsigned>(plan.splits));
  return pdl::launch(dependent, kernel, grid, dim3(kThreads), 0, stream, a);
}

}  // namespace gptq::cuda::gemv
