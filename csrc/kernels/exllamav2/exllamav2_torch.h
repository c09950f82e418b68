// Torch adapter of the ExLlamaV2-style GEMV (no CUDA headers: src/autogptq_cuda.cpp includes this).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

namespace gptq::cuda {

// gptq::exllamav2_gemm on CUDA: gathers x's columns by perm, then the half2 GEMV for fp16, 4 bits,
// M = 1..4 and group sizes -1 or multiples of 32; every other case runs gptq::autogptq_gemm.
at::Tensor exllamav2_gemm_cuda(const at::Tensor& x, const at::Tensor& qweight_sorted, const at::Tensor& qzeros,
                               const at::Tensor& scales, const c10::optional<at::Tensor>& perm, int64_t bits,
                               int64_t group_size, int64_t checkpoint_format);

}  // namespace gptq::cuda
