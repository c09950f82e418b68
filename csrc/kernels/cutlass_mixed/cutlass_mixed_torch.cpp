// Torch adapter of the large-batch Hopper GEMM: alignment, output and workspaces (the weights in CUTLASS's
// layout, N K / 2 bytes, and z' = -z s, [G, N] in x's dtype) from the caching allocator, per call or kept
// by the caller.
#include "cutlass_mixed_torch.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "check.h"
#include "gemv_cuda.h"
#include "kernels/cutlass_mixed/cutlass_mixed_launch.h"

// Built with the kernel only (GPTQ_WITH_CUTLASS_MIXED); the ops call it under the same condition.
#if defined(GPTQ_WITH_CUTLASS_MIXED)
namespace gptq::cuda {

void check_cutlass_mixed_shape(const char* op, int64_t M, int64_t K, int64_t N, int64_t group_size) {
  GPTQ_CHECK(cutlass_mixed_supports(M, K, N, group_size), op, "the CUTLASS GEMM needs K a multiple of 64 (got ", K,
             "), N a multiple of 16 (got ", N, ") and group_size -1 or a multiple of 64 dividing K (got ", group_size,
             ")");
}

namespace {

void run(const char* op, const CutlassMixedArgs& a) {
  const cudaError_t err = launch_cutlass_mixed(a, at::cuda::getCurrentCUDAStream().stream());
  GPTQ_CHECK(err == cudaSuccess, op, a.gemm ? "CUTLASS GEMM" : "CUTLASS weight conversion", " failed for M = ", a.M,
             ", K = ", a.K, ", N = ", a.N, ", group_size = ", a.group_size, ": ", cudaGetErrorString(err));
}

// Runs the GEMM of `a` (its weights and zeros workspaces set) into a new [M, N] output; x and scales
// 16-byte aligned for TMA.
at::Tensor gemm(const char* op, CutlassMixedArgs a, const at::Tensor& x, const at::Tensor& scales) {
  const auto xc = aligned16(x), sc = aligned16(scales);
  auto out = at::empty({a.M, a.N}, x.options());
  at::Tensor gemm_ws;
  const size_t ws_bytes = cutlass_mixed_gemm_workspace_bytes(a.M, a.K, a.N, a.group_size, a.bf16);
  if (ws_bytes > 0) {
    gemm_ws = at::empty({static_cast<int64_t>(ws_bytes)}, x.options().dtype(at::kByte));
    a.gemm_ws = gemm_ws.data_ptr();
  }
  a.x = static_cast<const uint16_t*>(xc.const_data_ptr());
  a.scales = static_cast<const uint16_t*>(sc.const_data_ptr());
  a.out = static_cast<uint16_t*>(out.data_ptr());
  run(op, a);
  return out;
}

}  // namespace

at::Tensor cutlass_mixed_gemm(const char* op, const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& qzeros,
                              const at::Tensor& scales, int64_t K, int64_t N, int64_t group_size,
                              bool zeros_minus_one) {
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t M = x.size(0);
  check_cutlass_mixed_shape(op, M, K, N, group_size);
  const auto qw = qweight.contiguous(), qz = qzeros.contiguous();
  const int64_t G = group_size == -1 ? 1 : K / group_size;
  auto weights_ws = at::empty({N * K / 8}, x.options().dtype(at::kInt));  // caching allocator: 512-byte aligned
  auto zeros_ws = at::empty({G, N}, x.options());
  CutlassMixedArgs a;
  a.qweight = reinterpret_cast<const uint32_t*>(qw.const_data_ptr<int32_t>());
  a.qzeros = reinterpret_cast<const uint32_t*>(qz.const_data_ptr<int32_t>());
  a.weights_ws = reinterpret_cast<uint32_t*>(weights_ws.data_ptr<int32_t>());
  a.zeros_ws = static_cast<uint16_t*>(zeros_ws.data_ptr());
  a.M = M, a.K = K, a.N = N, a.group_size = group_size, a.zeros_minus_one = zeros_minus_one;
  a.bf16 = x.scalar_type() == at::kBFloat16;
  return gemm(op, a, x, scales);
}

std::tuple<at::Tensor, at::Tensor> cutlass_mixed_convert(const char* op, const at::Tensor& qweight,
                                                         const at::Tensor& qzeros, const at::Tensor& scales,
                                                         int64_t K, int64_t N, int64_t group_size,
                                                         bool zeros_minus_one) {
  const c10::cuda::CUDAGuard guard(qweight.device());
  check_cutlass_mixed_shape(op, 1, K, N, group_size);
  const auto qw = qweight.contiguous(), qz = qzeros.contiguous(), sc = aligned16(scales);
  const int64_t G = group_size == -1 ? 1 : K / group_size;
  auto weights = at::empty({N * K / 8}, qweight.options());
  auto zeros = at::empty({G, N}, scales.options());
  CutlassMixedArgs a;
  a.qweight = reinterpret_cast<const uint32_t*>(qw.const_data_ptr<int32_t>());
  a.qzeros = reinterpret_cast<const uint32_t*>(qz.const_data_ptr<int32_t>());
  a.scales = static_cast<const uint16_t*>(sc.const_data_ptr());
  a.weights_ws = reinterpret_cast<uint32_t*>(weights.data_ptr<int32_t>());
  a.zeros_ws = static_cast<uint16_t*>(zeros.data_ptr());
  a.M = 0, a.K = K, a.N = N, a.group_size = group_size, a.zeros_minus_one = zeros_minus_one;
  a.bf16 = scales.scalar_type() == at::kBFloat16;
  a.gemm = false;
  run(op, a);
  return {weights, zeros};
}

at::Tensor cutlass_mixed_gemm_converted(const char* op, const at::Tensor& x, const at::Tensor& weights,
                                        const at::Tensor& zeros, const at::Tensor& scales, int64_t K, int64_t N,
                                        int64_t group_size) {
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t M = x.size(0);
  check_cutlass_mixed_shape(op, M, K, N, group_size);
  // The copy is read by TMA in place: it must be the contiguous tensors cutlass_mixed_convert made.
  GPTQ_CHECK(weights.is_contiguous() && zeros.is_contiguous() && reinterpret_cast<uintptr_t>(weights.data_ptr()) % 128 == 0 &&
                 reinterpret_cast<uintptr_t>(zeros.data_ptr()) % 16 == 0,
             op, "cutlass_weights and cutlass_zeros must be the contiguous, aligned tensors gptq::cutlass_prepare returns");
  CutlassMixedArgs a;
  a.weights_ws = reinterpret_cast<uint32_t*>(const_cast<void*>(weights.const_data_ptr()));
  a.zeros_ws = static_cast<uint16_t*>(const_cast<void*>(zeros.const_data_ptr()));
  a.M = M, a.K = K, a.N = N, a.group_size = group_size;
  a.bf16 = x.scalar_type() == at::kBFloat16;
  a.convert = false;
  return gemm(op, a, x, scales);
}

}  // namespace gptq::cuda
#endif
