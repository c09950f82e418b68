// Launcher for the AutoGPTQ-style GEMM: y [M, N] = x [M, K] * W^T with W read straight from the
// checkpoint layout (qweight [K*bits/32, N] packed along K, qzeros [G, N*bits/32], scales [G, N],
// optional g_idx [K]); see include/gptq/format.h.
//
// It is a split-K GEMV on CUDA cores for small M (decoding): memory-bound, so the design goal is to
// stream qweight at full bandwidth (16-byte loads, many blocks per SM) with few instructions per
// weight. Larger M is the caller's business (dequantize + cuBLAS).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/gemv_launch.h"

namespace gptq::cuda {

// Largest M the GEMV kernel serves; above it the adapter dequantizes and calls cuBLAS.
constexpr int64_t kGemvMaxRows = 16;

// Bytes of fp32 workspace launch_autogptq_gemm needs for (M, K, N, bits): the per-split partial sums,
// [splits, M, N]. 0 when the problem runs in one split (the kernel then writes `out` directly).
int64_t autogptq_workspace_bytes(int64_t M, int64_t K, int64_t N, int bits, int sm_count);

// x [M, K] (T, row-major, contiguous), out [M, N] (T). g_idx: nullptr for contiguous groups
// (g = k / group_size, or 0 when group_size == -1); otherwise any group per input channel
// (act-order), decoded per k. zeros_minus_one: checkpoint format "gptq" (v1).
// Requirements (the torch adapter checks them): K a multiple of the packing period, N % 4 == 0, 1 <= M <= kGemvMaxRows,
// 16-byte aligned qweight. `workspace` holds autogptq_workspace_bytes(...) bytes (may be null when
// that is 0). T is __half or __nv_bfloat16.
template <typename T>
cudaError_t launch_autogptq_gemm(const T* x, const uint32_t* qweight, const uint32_t* qzeros, const T* scales,
                                 const int32_t* g_idx, T* out, float* workspace, int64_t M, int64_t K, int64_t N,
                                 int bits, int64_t group_size, bool zeros_minus_one, int sm_count,
                                 cudaStream_t stream);

}  // namespace gptq::cuda

namespace gptq::cuda {

// W^T [K, N] (T) from a packed layer: out[k, n] = scales[g, n] * (q[k, n] - z[g, n]), g = g_idx[k] or
// k / group_size (0 when group_size == -1). K a multiple of the packing period, N % 4 == 0, 16-byte
// aligned qweight; K / period <= 65535 (K up to 524288 at 4 bits).
template <typename T>
cudaError_t launch_dequantize_kn(const uint32_t* qweight, const uint32_t* qzeros, const T* scales,
                                 const int32_t* g_idx, T* out, int64_t K, int64_t N, int bits, int64_t group_size,
                                 bool zeros_minus_one, cudaStream_t stream);

}  // namespace gptq::cuda

namespace gptq::cuda {

// The 3-bit half2 GEMV (autogptq_gemv3.cu): fp16, M = 1..4, contiguous groups (no g_idx).
inline bool gemv3_supports(int64_t M, int64_t K, int64_t N, int64_t group_size) {
  return M >= 1 && M <= 4 && K % 32 == 0 && N % 32 == 0 &&
         (group_size == -1 || (group_size > 0 && group_size % 32 == 0));
}

// plan.batch: 32-channel packing periods (3 packed rows each) a warp loads at once.
GemvPlan gemv3_plan(int64_t M, int64_t K, int64_t N, int64_t group_size, const GemvDevice& dev);

cudaError_t launch_gemv3(const GemvArgs& args, const GemvPlan& plan, cudaStream_t stream);

// The 3-bit tensor-core GEMV (autogptq_tcgemv3.cu): fp16, M = 1..16, contiguous groups of -1 or a
// multiple of 32 (no g_idx). plan.batch: periods a batch (4).
inline bool tcgemv3_supports(int64_t M, int64_t K, int64_t N, int64_t group_size) {
  return M >= 1 && M <= 16 && K % 32 == 0 && N % 32 == 0 && (group_size == -1 || (group_size > 0 && group_size % 32 == 0));
}
GemvPlan tcgemv3_plan(int64_t M, int64_t K, int64_t N, const GemvDevice& dev);
cudaError_t launch_tcgemv3(const GemvArgs& args, const GemvPlan& plan, cudaStream_t stream);

// The 2- and 8-bit tensor-core GEMV (autogptq_tcgemv28.cu): fp16, M = 1..16, contiguous groups of -1
// or a multiple of 32, no g_idx. plan.batch: packed rows a batch (4 per q-lane; 8 or 16 at 2 bits,
// where 16 needs groups of a multiple of 64).
inline bool tcgemv28_supports(int64_t M, int64_t K, int64_t N, int64_t group_size, int64_t bits) {
  return (bits == 2 || bits == 8) && M >= 1 && M <= 16 && K % 32 == 0 && N % 32 == 0 &&
         (group_size == -1 || (group_size > 0 && group_size % 32 == 0));
}
GemvPlan tcgemv28_plan(int64_t M, int64_t K, int64_t N, int64_t bits, int64_t group_size, const GemvDevice& dev);
template <int BITS>  // 2 or 8
cudaError_t launch_tcgemv28(const GemvArgs& args, const GemvPlan& plan, cudaStream_t stream);
// Whether the kernel's blocks at m = 1 fit one wave on sm_count SMs. At m = 1 the op takes it only
// then: on 8192x28672 (448 blocks of 64 features for 264 slots) 8 bits took 94.7 us against 89.3 with
// the AutoGPTQ-style GEMV, which streams wide layers at 2.7 TB/s; on the layers that fit it won at
// both widths, e.g. 4096x4096 9.7 against 14.9 (8 bits) and 6.6 against 10.7 (2 bits)
// (benchmarks/results/2026-11-23_h100_s11_tcgemv28-b_ab.txt).
bool tcgemv28_one_wave(int64_t K, int64_t N, int64_t bits, int64_t group_size, int sm_count);

}  // namespace gptq::cuda
