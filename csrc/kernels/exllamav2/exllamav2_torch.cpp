// Torch adapter: the act-order gather, then the half2 GEMV where it applies (allocations through the
// caching allocator, so the op is safe under CUDA graph capture), else the AutoGPTQ-style op.
#include "exllamav2_torch.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "autogptq_internal.h"
#include "check.h"
#include "gptq/kernels.h"
#include "kernels/exllamav2/exllamav2_launch.h"

namespace gptq::cuda {

at::Tensor exllamav2_gemm_cuda(const at::Tensor& x, const at::Tensor& qweight_sorted, const at::Tensor& qzeros,
                               const at::Tensor& scales, const c10::optional<at::Tensor>& perm, int64_t bits,
                               int64_t group_size, int64_t checkpoint_format) {
  const char* op = "gptq::exllamav2_gemm";
  const auto s = detail::check_gemm_args(op, x, qweight_sorted, qzeros, scales, c10::nullopt, bits, group_size,
                                         checkpoint_format);
  at::Tensor xp = x;
  if (perm.has_value() && perm->defined()) {
    GPTQ_CHECK(perm->dim() == 1 && perm->size(0) == s.K, op, "perm must have shape [K] = [", s.K, "], got ",
               perm->sizes());
    xp = x.index_select(1, *perm);
  }
  const bool half2_path = x.scalar_type() == at::kHalf && bits == 4 && x.size(0) == 1 && s.N % 8 == 0 &&
                          (group_size == -1 || group_size % 8 == 0);
  if (!half2_path) {
    return gptq::autogptq_gemm(xp, qweight_sorted, qzeros, scales, c10::nullopt, bits, group_size,
                               static_cast<CheckpointFormat>(checkpoint_format));
  }
  const c10::cuda::CUDAGuard guard(x.device());
  auto xc = xp.contiguous();
  auto qw = qweight_sorted.contiguous();
  auto qz = qzeros.contiguous();
  auto sc = scales.contiguous();
  auto out = at::empty({1, s.N}, x.options());
  if (s.N == 0) return out;
  const int sm_count = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t ws_bytes = exllamav2_workspace_bytes(s.K, s.N, sm_count);
  at::Tensor ws;
  if (ws_bytes > 0) ws = at::empty({ws_bytes / 4}, x.options().dtype(at::kFloat));
  const cudaError_t err = launch_exllamav2_gemv(
      reinterpret_cast<const __half*>(xc.const_data_ptr<at::Half>()),
      reinterpret_cast<const uint32_t*>(qw.const_data_ptr<int32_t>()),
      reinterpret_cast<const uint32_t*>(qz.const_data_ptr<int32_t>()),
      reinterpret_cast<const __half*>(sc.const_data_ptr<at::Half>()), reinterpret_cast<__half*>(out.data_ptr<at::Half>()),
      ws.defined() ? ws.data_ptr<float>() : nullptr, s.K, s.N, group_size, checkpoint_format == 1, sm_count,
      at::cuda::getCurrentCUDAStream().stream());
  GPTQ_CHECK(err == cudaSuccess, op, "kernel launch failed for K = ", s.K, ", N = ", s.N, ": ", cudaGetErrorString(err));
  return out;
}

}  // namespace gptq::cuda
