// Host-side description of a launch of the split-K GEMVs on CUDA cores and tensor cores
// (csrc/kernels/exllamav2, the 3-bit GEMV in csrc/kernels/autogptq): the kernel arguments and the
// plan of the grid. No device code: torch adapters include this.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <limits>

namespace gptq::cuda {

// Arguments of every split-K GEMV kernel: y [M, N] = x [M, K] W^T, W packed along K as in the
// checkpoint (qweight [K*bits/32, N], qzeros [G, N*bits/32], scales [G, N]) with contiguous groups.
struct GemvArgs {
  const __half* x = nullptr;          // [M, K], 16-byte aligned; bf16 bits if bf16
  // Act-order: [K] channel order of the sorted rows, channel k of the kernel being x[:, perm[k]]. Only
  // the Hopper GEMM reads it (its x-staging kernel gathers); the other kernels take x already gathered.
  const int32_t* perm = nullptr;
  const uint32_t* qweight = nullptr;  // 16-byte aligned
  const uint32_t* qzeros = nullptr;
  const __half* scales = nullptr;
  __half* out = nullptr;              // [M, N]
  float* partial = nullptr;           // [splits, M, N] when the plan splits K
  int* counters = nullptr;            // [col_blocks], zero before the first call; left at zero
  void* workspace = nullptr;          // plan.workspace_bytes, 16-byte aligned (the Hopper GEMM's staged x)
  int64_t M = 0, K = 0, N = 0;
  int64_t group_size = -1;            // -1 or a multiple of the batch's input channels
  bool zeros_minus_one = false;       // GPTQ v1 checkpoints store z - 1
  bool bf16 = false;                  // x, scales and out are bf16 (the kernels that take it); else fp16
  int batches_per_split = 0;          // set by the launcher from the plan
};

struct GemvPlan {
  int batch = 0;                  // what one batch along K holds: packed rows, periods or steps (per kernel)
  int64_t col_blocks = 0;         // grid.x: blocks of the kernel's columns (128, or 256 for the tensor-core GEMM)
  int cols = 128;                 // columns a block (the m = 1 GEMV is built for several widths)
  int64_t splits = 1;             // grid.y: K splits
  int64_t batches_per_split = 0;
  int64_t workspace_bytes = 0;    // scratch the launch needs besides the split-K partials
  int blocks_per_sm = 1;          // resident blocks an SM (the split-K GEMVs: as queried; the Hopper GEMM: 1 or 2)
};

// What a plan needs of the device: SMs, and a cap on the K splits (GPTQ_GEMV_MAX_SPLITS, tuning only).
struct GemvDevice {
  int sm_count = 1;
  int64_t max_splits = std::numeric_limits<int64_t>::max();
};

using GemvLaunchFn = cudaError_t (*)(const GemvArgs&, const GemvPlan&, cudaStream_t);

}  // namespace gptq::cuda
