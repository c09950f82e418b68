// Torch adapter of the GPTQ block kernel (no CUDA headers: src/solver_cuda.cpp includes this).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace gptq::cuda {

// CUDA implementation of the op gptq::solve_block (semantics: src/solver.cpp).
void solve_block_cuda(const at::Tensor& W, const at::Tensor& U, const at::Tensor& codes, const at::Tensor& err,
                      const at::Tensor& loss, const at::Tensor& scales, const at::Tensor& zeros,
                      const at::Tensor& col_group, int64_t i1, int64_t i2, int64_t bits, bool sym, int64_t group_size,
                      bool dynamic_groups, double mse);

}  // namespace gptq::cuda
