// Torch adapter of the ExLlamaV2-style GEMV (no CUDA headers: src/autogptq_cuda.cpp includes this).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <tuple>

namespace gptq::cuda {

// gptq::exllamav2_gemm on CUDA: gathers x's columns by perm (int32 or int64 [K]; for fp16 and bf16 x
// an entry outside [0, K) gives NaN outputs), then the GEMV, tensor-core or Hopper GEMM where they
// apply (4 bits, fp16 or bf16, see exllamav2_torch.cpp); every other case runs gptq::autogptq_gemm.
at::Tensor exllamav2_gemm_cuda(const at::Tensor& x, const at::Tensor& qweight_sorted, const at::Tensor& qzeros,
                               const at::Tensor& scales, const c10::optional<at::Tensor>& perm, int64_t bits,
                               int64_t group_size, int64_t checkpoint_format);

// The "cutlass" backend's ops (builds with CUTLASS's GEMM only, GPTQ_WITH_CUTLASS_MIXED; Hopper, 4 bits):
// gptq::cutlass_prepare converts qweight_sorted and qzeros once into CUTLASS's layout, (weights int32
// [N K / 8], zeros -z s [G, N] in the scales' dtype); gptq::cutlass_gemm runs CUTLASS's GEMM on that copy from
// 256 rows where its tiles fill most of the GPU (use_cutlass_copy in exllamav2_torch.cpp), else
// exllamav2_gemm_cuda.
std::tuple<at::Tensor, at::Tensor> cutlass_prepare_cuda(const at::Tensor& qweight_sorted, const at::Tensor& qzeros,
                                                        const at::Tensor& scales, int64_t bits, int64_t group_size,
                                                        int64_t checkpoint_format);
at::Tensor cutlass_gemm_cuda(const at::Tensor& x, const at::Tensor& qweight_sorted, const at::Tensor& qzeros,
                             const at::Tensor& scales, const c10::optional<at::Tensor>& perm,
                             const at::Tensor& cutlass_weights, const at::Tensor& cutlass_zeros, int64_t bits,
                             int64_t group_size, int64_t checkpoint_format);

}  // namespace gptq::cuda
