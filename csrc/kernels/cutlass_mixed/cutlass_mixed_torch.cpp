// Torch adapter of the large-batch Hopper GEMM: alignment, output and the per-call workspaces (the
// weights in CUTLASS's layout, N K / 2 bytes, and z' = -z s, [G, N] in x's dtype) from the caching allocator.
#include "cutlass_mixed_torch.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "check.h"
#include "gemv_cuda.h"
#include "kernels/cutlass_mixed/cutlass_mixed_launch.h"

// Built with the kernel only (GPTQ_WITH_CUTLASS_MIXED); the op calls it under the same condition.
#if defined(GPTQ_WITH_CUTLASS_MIXED)
namespace gptq::cuda {

at::Tensor cutlass_mixed_gemm(const char* op, const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& qzeros,
                              const at::Tensor& scales, int64_t K, int64_t N, int64_t group_size,
                              bool zeros_minus_one) {
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t M = x.size(0);
  GPTQ_CHECK(cutlass_mixed_supports(M, K, N, group_size), op, "the CUTLASS GEMM needs K a multiple of 64 (got ", K,
             "), N a multiple of 16 (got ", N, ") and group_size -1 or a multiple of 64 dividing K (got ", group_size,
             ")");
  // TMA reads x and the scales.
  const auto xc = aligned16(x), sc = aligned16(scales), qw = qweight.contiguous(), qz = qzeros.contiguous();
  auto out = at::empty({M, N}, x.options());
  const int64_t G = group_size == -1 ? 1 : K / group_size;
  auto weights_ws = at::empty({N * K / 8}, x.options().dtype(at::kInt));  // caching allocator: 512-byte aligned
  auto zeros_ws = at::empty({G, N}, x.options());
  at::Tensor gemm_ws;
  CutlassMixedArgs a;
  const bool bf16 = x.scalar_type() == at::kBFloat16;
  const size_t ws_bytes = cutlass_mixed_gemm_workspace_bytes(M, K, N, group_size, bf16);
  if (ws_bytes > 0) {
    gemm_ws = at::empty({static_cast<int64_t>(ws_bytes)}, x.options().dtype(at::kByte));
    a.gemm_ws = gemm_ws.data_ptr();
  }
  a.x = static_cast<const uint16_t*>(xc.const_data_ptr());
  a.qweight = reinterpret_cast<const uint32_t*>(qw.const_data_ptr<int32_t>());
  a.qzeros = reinterpret_cast<const uint32_t*>(qz.const_data_ptr<int32_t>());
  a.scales = static_cast<const uint16_t*>(sc.const_data_ptr());
  a.out = static_cast<uint16_t*>(out.data_ptr());
  a.weights_ws = reinterpret_cast<uint32_t*>(weights_ws.data_ptr<int32_t>());
  a.zeros_ws = static_cast<uint16_t*>(zeros_ws.data_ptr());
  a.M = M, a.K = K, a.N = N, a.group_size = group_size, a.zeros_minus_one = zeros_minus_one, a.bf16 = bf16;
  const cudaError_t err = launch_cutlass_mixed(a, at::cuda::getCurrentCUDAStream().stream());
  GPTQ_CHECK(err == cudaSuccess, op, "CUTLASS GEMM failed for M = ", M, ", K = ", K, ", N = ", N,
             ", group_size = ", group_size, ": ", cudaGetErrorString(err));
  return out;
}

}  // namespace gptq::cuda
#endif
