// Launcher of the GPTQ block kernel: the column-serial part of the solver (see gptq::solve_block in
// src/solver.cpp for the exact semantics) for up to kSolveBlockMaxCols columns, on raw pointers.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace gptq::cuda {

constexpr int kSolveBlockMaxCols = 128;

// W [N, K] and U [K, K] row-major (T = float or double); columns [i1, i1 + B) are solved,
// B <= kSolveBlockMaxCols. codes uint8 [N, K]; err points at the error of column i1 of row 0, row
// stride err_ld; loss [N]; scales/zeros [G, N]; col_group [K]. dynamic: groups of group_size
// columns get their grid when they start (p % group_size == 0), from W's current values.
template <typename T>
cudaError_t launch_solve_block(T* W, const T* U, uint8_t* codes, T* err, int64_t err_ld, T* loss, T* scales,
                               T* zeros, const int32_t* col_group, int64_t N, int64_t K, int64_t i1, int B, int bits,
                               bool sym, int64_t group_size, bool dynamic, double mse, cudaStream_t stream);

}  // namespace gptq::cuda
