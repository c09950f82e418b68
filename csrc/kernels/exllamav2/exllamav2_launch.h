// Launcher for the ExLlamaV2-style GEMV: fp16 or bf16 activations, M = 1..4 rows, 4-bit weights with
// contiguous groups (act-order layers have their rows sorted by group at load, gptq::exllamav2_prepare).
//
// Arithmetic. Where the AutoGPTQ-style kernel decodes one weight per instruction into fp32, this one
// decodes two per instruction into a half2, as ExLlamaV2 does. A LOP3 merges a nibble pair of a word
// into the mantissas of 1024.0h (0x6400): mask 0x000F000F gives 1024 + q, mask 0x00F000F0 gives
// 1024 + 16q. One HFMA2 with 2^-4 (resp. 2^-8) and the addend -(64 + z/16) (resp. -(4 + z/16)) then
// leaves (q - z)/16 exactly, and one HFMA2 multiplies it with the x pair: three instructions per two
// weights, one shift per word. The half2 chains cover two packed rows (16 input channels) and are
// added into fp32 accumulators; the group scale (and the 16) is applied in fp32 once per batch, so
// rounding stays at the level of fp16 products.
//
// bf16 (7 mantissa bits) cannot hold those products, so its GEMV works in fp32: a shift and a LOP3
// with 16.0f make 16 + q/16 or 16 + q from a nibble at the top of an fp32 mantissa, one FFMA a weight
// adds x (16 + q) (x scaled by 16 for the low nibbles, exactly), and the bias sum 16 sum(x') and
// z sum(x) are removed per batch and column: 3 shifts, 8 LOP3 and 8 FFMA a word at M = 1.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/gemv_launch.h"

namespace gptq::cuda {

constexpr int kExllamaV2MaxM = 4;

// Group sizes the kernel takes for M rows: -1 or a multiple of 32 (64 for the 8-row batches at M = 1).
inline bool exllamav2_gemv_supports(int64_t M, int64_t group_size) {
  return M >= 1 && M <= kExllamaV2MaxM && (group_size == -1 || (group_size > 0 && group_size % 32 == 0));
}

// plan.batch: packed rows (8 input channels each) a warp loads at once.
GemvPlan exllamav2_gemv_plan(int64_t M, int64_t K, int64_t N, int64_t group_size, bool bf16, const GemvDevice& dev);

cudaError_t launch_exllamav2_gemv(const GemvArgs& args, const GemvPlan& plan, cudaStream_t stream);

// The act-order gather (exllamav2_gather.cu): out [M, K] = x [M, K] with columns taken in perm's
// order, out[m, k] = x[m, perm[k]], for 2-byte elements (fp16 or bf16 bits); x, perm and out
// contiguous. It runs in front of the GEMVs, the mma.sync GEMM and the AutoGPTQ-style kernels on
// sorted rows (the Hopper GEMM gathers while it stages x, GemvArgs::perm). A dependent launch on
// compute capability 9.0: the kernel behind it prefetches its weights while this one waits for x.
// A perm entry outside [0, K) writes NaN instead of reading outside x.
cudaError_t launch_gather_columns(const uint16_t* x, const int32_t* perm, uint16_t* out, int64_t M, int64_t K,
                                  cudaStream_t stream);

// The tensor-core GEMM (exllamav2_mma.cu): M = 1..16 rows, group size -1 or a power of two >= 32.
constexpr int kExllamaV2MmaMaxM = 16;
inline bool exllamav2_mma_supports(int64_t M, int64_t group_size) {
  return M >= 1 && M <= kExllamaV2MmaMaxM &&
         (group_size == -1 || (group_size >= 32 && (group_size & (group_size - 1)) == 0));
}
// plan.batch: packed rows a stage (32: 256 input channels); blocks of 256 columns.
GemvPlan exllamav2_mma_plan(int64_t M, int64_t K, int64_t N, const GemvDevice& dev);
cudaError_t launch_exllamav2_mma(const GemvArgs& args, const GemvPlan& plan, cudaStream_t stream);

// The tensor-core GEMV (exllamav2_tcgemv.cu): M = 1..16 tokens, fp16 or bf16, group size -1 or a
// multiple of 32. plan.batch: packed rows a batch along K (4 or 8).
constexpr int kExllamaV2TcGemvMaxM = 16;
inline bool exllamav2_tcgemv_supports(int64_t M, int64_t group_size) {
  return M >= 1 && M <= kExllamaV2TcGemvMaxM && (group_size == -1 || (group_size > 0 && group_size % 32 == 0));
}
GemvPlan exllamav2_tcgemv_plan(int64_t M, int64_t K, int64_t N, int64_t group_size, bool bf16, const GemvDevice& dev);
cudaError_t launch_exllamav2_tcgemv(const GemvArgs& args, const GemvPlan& plan, cudaStream_t stream);

// The Hopper GEMM on warpgroup MMA (exllamav2_wgmma_sm90a.cu; built when 90a is among the CUDA
// architectures, which defines GPTQ_WITH_SM90A, and run on compute capability 9.0 alone): any M,
// group size -1 or a power of two >= 32. plan.batch: tokens a block (16, 32, 64 or 128);
// plan.workspace_bytes: x staged in the kernel's channel order.
inline bool exllamav2_wgmma_supports(int64_t M, int64_t group_size) {
  return M >= 1 && (group_size == -1 || (group_size >= 32 && (group_size & (group_size - 1)) == 0));
}
GemvPlan exllamav2_wgmma_plan(int64_t M, int64_t K, int64_t N, const GemvDevice& dev);
cudaError_t launch_exllamav2_wgmma(const GemvArgs& args, const GemvPlan& plan, cudaStream_t stream);

}  // namespace gptq::cuda
