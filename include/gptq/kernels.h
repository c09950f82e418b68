// Quantized GEMM kernels: y [M, N] = x [M, K] W^T for a GPTQ-packed W (layout: gptq/format.h).
//
// Every function goes through the dispatcher (torch.ops.gptq.*), so it runs on the device of its
// inputs: CUDA kernels when libgptq was built with them, otherwise (and on the CPU) dequantize +
// matmul. x must have the scales' dtype (float16 or bfloat16 on CUDA; float32 too on the CPU).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <tuple>

#include <gptq/format.h>

namespace gptq {

// AutoGPTQ-style kernel over the checkpoint layout as stored: bits 2, 3, 4, 8, any group size,
// g_idx in any order (act-order) or undefined (contiguous groups). M <= 16 runs a split-K GEMV on
// CUDA cores; larger M dequantizes once and calls cuBLAS. Op: gptq::autogptq_gemm.
at::Tensor autogptq_gemm(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& qzeros,
                         const at::Tensor& scales, const c10::optional<at::Tensor>& g_idx, int64_t bits,
                         int64_t group_size, CheckpointFormat format);

// ExLlamaV2-style act-order handling: at load, the rows of qweight are sorted by g_idx so that every
// group becomes contiguous; at run time the columns of x are gathered by the same permutation and
// the contiguous-group kernel runs, so act-order costs one gather of M*K activations.
// Returns (qweight_sorted [K*bits/32, N], perm int32 [K]); fails when the sorted groups are not all of
// size group_size (the last may be shorter). Op: gptq::exllamav2_prepare.
std::tuple<at::Tensor, at::Tensor> exllamav2_prepare(const at::Tensor& qweight, const at::Tensor& g_idx,
                                                     int64_t bits, int64_t group_size);
// y = x[:, perm] W_sorted^T, with qweight_sorted and perm from exllamav2_prepare (perm undefined: no
// act-order). On CUDA, 4-bit layers run a GEMV (fp16 M = 1 in half2 arithmetic; fp16 M = 2..8 and
// bf16 M = 1..8 on the tensor cores), a tensor-core GEMM from the checkpoint layout (fp16, M <= 16) or
// on Hopper a warpgroup-MMA GEMM (fp16 and bf16, M from 9 up to 1024), else the AutoGPTQ-style kernel.
// Op: gptq::exllamav2_gemm.
at::Tensor exllamav2_gemm(const at::Tensor& x, const at::Tensor& qweight_sorted, const at::Tensor& qzeros,
                          const at::Tensor& scales, const c10::optional<at::Tensor>& perm, int64_t bits,
                          int64_t group_size, CheckpointFormat format);

// The "cutlass" backend (QuantKernel::kCutlass): a second copy of a 4-bit layer's weights in the layout of
// CUTLASS's Hopper mixed-input GEMM, made once at load, for large batches. It costs N K / 2 bytes more
// (as much again as qweight) and saves converting the weights at every call, which the ExLlamaV2-style op
// does from 1024 rows. CUDA only, in builds with CUTLASS's GEMM, on compute capability 9.0; 4 bits, fp16 or
// bf16 scales, K a multiple of 64, N of 16, group_size -1 or a multiple of 64 dividing K.
// cutlass_prepare returns (cutlass_weights int32 [N K / 8], cutlass_zeros -z s [G, N] in the scales' dtype)
// for exllamav2_prepare's rows. Op: gptq::cutlass_prepare.
std::tuple<at::Tensor, at::Tensor> cutlass_prepare(const at::Tensor& qweight_sorted, const at::Tensor& qzeros,
                                                   const at::Tensor& scales, int64_t bits, int64_t group_size,
                                                   CheckpointFormat format);
// exllamav2_gemm, except that from 256 rows, where CUTLASS's 128 x 256 tiles number 80 or more
// (ceil(N / 128) ceil(M / 256); GPTQ_CUTLASS_COPY_MIN_M sets a plain row threshold instead), it runs
// CUTLASS's GEMM on the copy.
// Op: gptq::cutlass_gemm.
at::Tensor cutlass_gemm(const at::Tensor& x, const at::Tensor& qweight_sorted, const at::Tensor& qzeros,
                        const at::Tensor& scales, const c10::optional<at::Tensor>& perm,
                        const at::Tensor& cutlass_weights, const at::Tensor& cutlass_zeros, int64_t bits,
                        int64_t group_size, CheckpointFormat format);

}  // namespace gptq
