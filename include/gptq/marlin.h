// Marlin-style tensor-core GEMM for 4- and 8-bit GPTQ layers: y = x W^T with x fp16 or bf16.
//
// Two steps, both dispatcher ops (torch.ops.gptq.marlin_repack / marlin_gemm):
//   1. marlin_repack, once at load time: rewrites a checkpoint layer (qweight, qzeros, scales, g_idx)
//      into the tile layout the kernel streams (see csrc/kernels/marlin/marlin_launch.h). Exact: no
//      value changes, only positions. Act-order layers (g_idx not k / group_size) get their rows
//      sorted by group, and `perm` says which input channel each sorted row came from.
//   2. marlin_gemm, per forward: y[..., N] = x[..., K] @ W^T.
//
// Shapes after the repack, K_pad = K rounded up to 128, N_pad = N rounded up to 64 (the padding is
// zero and costs nothing in the result), G_pad = ceil(K_pad / group_size) (1 for group_size -1):
//   qweight int32 [N_pad/64, K_pad*2*bits], scales and zeros [G_pad, N_pad] in the scales' dtype
//   (columns permuted within each 64-column tile; zeros hold the true zero point, v1's -1 undone),
//   perm int32 [K].
// marlin_gemm takes zeros = nullopt for a symmetric layer (every zero 2^(bits-1): one load less per
// group) and perm = nullopt when the layer has no act-order (perm is the identity): both facts are
// known at load time (python: gptq.kernels.marlin.repack decides them).
//
// Supported: bits 4 or 8; group_size -1, 32, 64 or a multiple of 128 (128, 256 ...); x fp16 or
// bf16 with scales of the same dtype; CUDA devices sm_80 and newer; any M, any K
// and N the checkpoint format allows (K padded to 128 and N to 64 inside). Act-order needs every
// group to hold exactly group_size rows, which GPTQ's desc_act produces; anything else is refused.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <tuple>

#include <gptq/format.h>

namespace gptq {

// Repacks a GPTQ layer for marlin_gemm; returns (qweight, scales, zeros, perm), see above. Runs on
// the device of its inputs (CPU or CUDA).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> marlin_repack(const at::Tensor& qweight,
                                                                         const at::Tensor& qzeros,
                                                                         const at::Tensor& scales,
                                                                         const c10::optional<at::Tensor>& g_idx,
                                                                         int64_t bits, int64_t group_size,
                                                                         CheckpointFormat format);

// How marlin_gemm computes: kMarlinAuto picks by M (the tensor-core kernel for small and medium M,
// dequantize + cuBLAS for large M); the other two force one path (tests, benchmarks).
enum class MarlinMode : int64_t { kAuto = 0, kFused = 1, kDense = 2 };

// y [..., size_n] = x [..., K] @ W^T on CUDA, in x's dtype (fp32 accumulation).
at::Tensor marlin_gemm(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scales,
                       const c10::optional<at::Tensor>& zeros, const c10::optional<at::Tensor>& perm, int64_t bits,
                       int64_t group_size, int64_t size_n, MarlinMode mode = MarlinMode::kAuto);

}  // namespace gptq
