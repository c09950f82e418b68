// Torch adapter of the ExLlamaV2-style GEMV (no CUDA headers: src/autogptq_cuda.cpp includes this).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

namespace gptq::cuda {

// gptq::exllamav2_gemm on CUDA: gathers x's columns by perm (int32 or int64 [K]; for fp16 and bf16 x
// an entry outside [0, K) gives NaN outputs), then the GEMV, tensor-core or Hopper GEMM where they
// apply (4 bits, fp16 or bf16, see exllamav2_torch.cpp); every other case runs gptq::autogptq_gemm.
at::Tensor exllamav2_gemm_cuda(const at::Tensor& x, const at::Tensor& qweight_sorted, const at::Tensor& qzeros,
                               const at::Tensor& scales, const c10::optional<at::Tensor>& perm, int64_t bits,
                               int64_t group_size, int64_t checkpoint_format);

}  // namespace gptq::cuda
