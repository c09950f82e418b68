// Torch adapter of the large-batch Hopper GEMM (cutlass_mixed_launch.h), for the ExLlamaV2-style op's
// kernel choice and the "cutlass" backend's ops (csrc/kernels/exllamav2/exllamav2_torch.cpp). Defined only in
// builds with the kernel (GPTQ_WITH_CUTLASS_MIXED), on compute capability 9.0 for the shapes
// cutlass_mixed_supports takes.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <tuple>

namespace gptq::cuda {

// Errors, naming `op`, unless cutlass_mixed_supports(M, K, N, group_size) (cutlass_mixed_launch.h).
void check_cutlass_mixed_shape(const char* op, int64_t M, int64_t K, int64_t N, int64_t group_size);

// out [M, N] = x W^T for fp16 or bf16 x [M, K] (columns already in the sorted rows' order for act-order) and the
// checkpoint-layout qweight [K / 8, N], qzeros [G, N / 8], scales [G, N] in x's dtype: converts the weights
// into CUTLASS's layout (a per-call workspace), then runs the GEMM.
at::Tensor cutlass_mixed_gemm(const char* op, const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& qzeros,
                              const at::Tensor& scales, int64_t K, int64_t N, int64_t group_size,
                              bool zeros_minus_one);

// The conversion alone, kept by the caller: (weights int32 [N K / 8] in CUTLASS's layout, zeros z' = -z s [G, N]
// in the scales' dtype).
std::tuple<at::Tensor, at::Tensor> cutlass_mixed_convert(const char* op, const at::Tensor& qweight,
                                                         const at::Tensor& qzeros, const at::Tensor& scales,
                                                         int64_t K, int64_t N, int64_t group_size,
                                                         bool zeros_minus_one);

// The GEMM alone, on a copy cutlass_mixed_convert made (x in the scales' and zeros' dtype).
at::Tensor cutlass_mixed_gemm_converted(const char* op, const at::Tensor& x, const at::Tensor& weights,
                                        const at::Tensor& zeros, const at::Tensor& scales, int64_t K, int64_t N,
                                        int64_t group_size);

}  // namespace gptq::cuda
