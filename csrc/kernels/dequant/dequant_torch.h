// Torch adapter of the dequantize kernel (no CUDA headers: src/ops_cuda.cpp includes this).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

namespace gptq::cuda {

at::Tensor dequantize_cuda(const at::Tensor& qweight, const at::Tensor& qzeros, const at::Tensor& scales,
                           const c10::optional<at::Tensor>& g_idx, int64_t bits, int64_t group_size,
                           int64_t checkpoint_format);

}  // namespace gptq::cuda
