// Torch adapter of the AutoGPTQ-style GEMM (no CUDA headers: src/autogptq_cuda.cpp includes this).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

namespace gptq::cuda {

// gptq::autogptq_gemm on CUDA: x [M, K] (fp16/bf16, the scales' dtype) -> [M, N]. M <= 16 runs the
// split-K GEMV kernel; larger M dequantizes W (gptq::dequantize) and calls cuBLAS.
at::Tensor autogptq_gemm_cuda(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& qzeros,
                              const at::Tensor& scales, const c10::optional<at::Tensor>& g_idx, int64_t bits,
                              int64_t group_size, int64_t checkpoint_format);

}  // namespace gptq::cuda
