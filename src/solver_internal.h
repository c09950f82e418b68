// Host-side pieces of the GPTQ solver shared by the CPU and CUDA registrations.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace gptq::detail {

// Validates the arguments of gptq::solve_block (see the schema in src/solver.cpp) for `op`.
void check_solve_block(const char* op, const at::Tensor& W, const at::Tensor& U, const at::Tensor& codes,
                       const at::Tensor& err, const at::Tensor& loss, const at::Tensor& scales,
                       const at::Tensor& zeros, const at::Tensor& col_group, int64_t i1, int64_t i2, int64_t bits,
                       int64_t group_size, bool dynamic_groups);

void solve_block_cpu(const at::Tensor& W, const at::Tensor& U, const at::Tensor& codes, const at::Tensor& err,
                     const at::Tensor& loss,
                     const at::Tensor& scales, const at::Tensor& zeros, const at::Tensor& col_group, int64_t i1,
                     int64_t i2,
                     int64_t bits, bool sym, int64_t group_size, bool dynamic_groups, double mse);

}  // namespace gptq::detail
