// Torch adapter of the Marlin GEMM (no CUDA headers: src/marlin_cuda.cpp includes this).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <cstdint>

namespace gptq::cuda {

// gptq::marlin_gemm on CUDA; see include/gptq/marlin.h for the arguments.
at::Tensor marlin_gemm_cuda(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scales,
                            const c10::optional<at::Tensor>& zeros, const c10::optional<at::Tensor>& perm,
                            int64_t bits, int64_t group_size, int64_t size_n, int64_t mode);

}  // namespace gptq::cuda
