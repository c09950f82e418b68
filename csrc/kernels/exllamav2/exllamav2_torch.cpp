// Torch adapter: the act-order gather, then the half2 GEMV where it applies (allocations through the
// caching allocator, so the op is safe under CUDA graph capture), else the AutoGPTQ-style op.
#include "exllamav2_torch.h"

#include <algorithm>
#include <cstdlib>

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "autogptq_internal.h"
#include "check.h"
#include "gptq/kernels.h"
#include "kernels/exllamav2/exllamav2_launch.h"

namespace gptq::cuda {
namespace {

// Smallest M that takes the tensor-core variant. GPTQ_EXLLAMAV2_MMA_MIN_M overrides it (tuning only).
int64_t mma_min_m() {
  static const int64_t v = [] {
    const char* e = std::getenv("GPTQ_EXLLAMAV2_MMA_MIN_M");
    return e != nullptr ? std::max<int64_t>(1, std::atoll(e)) : int64_t{5};
  }();
  return v;
}

}  // namespace

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
  const int64_t M = x.size(0);
  const bool fp16_4bit = x.scalar_type() == at::kHalf && bits == 4 && s.N % 8 == 0;
  // Rows up to mma_min_m() - 1: the half2 GEMV; from there to 16: the tensor-core variant.
  const bool use_gemv = fp16_4bit && M < mma_min_m() && exllamav2_gemv_supports(M, group_size);
  const bool use_mma = fp16_4bit && !use_gemv && exllamav2_mma_supports(M, group_size);
  if (!use_gemv && !use_mma) {
    return gptq::autogptq_gemm(xp, qweight_sorted, qzeros, scales, c10::nullopt, bits, group_size,
                               static_cast<CheckpointFormat>(checkpoint_format));
  }
  const c10::cuda::CUDAGuard guard(x.device());
  // 16-byte loads of x and qweight: a view at an odd offset is copied once.
  auto aligned = [](at::Tensor t) {
    t = t.contiguous();
    return reinterpret_cast<uintptr_t>(t.const_data_ptr()) % 16 == 0 ? t : t.clone();
  };
  auto xc = aligned(xp);
  auto qw = aligned(qweight_sorted);
  auto qz = qzeros.contiguous();
  auto sc = aligned(scales);
  auto out = at::empty({M, s.N}, x.options());
  if (s.N == 0) return out;
  if (s.K == 0) return out.zero_();
  const int sm_count = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const ExllamaV2GemvPlan plan =
      use_gemv ? exllamav2_gemv_plan(M, s.K, s.N, group_size, sm_count) : exllamav2_mma_plan(M, s.K, s.N, sm_count);
  // Split-K workspaces through the caching allocator (safe under CUDA graph capture): fp32 partial
  // sums, fully written before they are read, and one zeroed counter per 128-column strip.
  at::Tensor partial, counters;
  ExllamaV2GemvArgs args;
  if (plan.splits > 1) {
    partial = at::empty({plan.splits, M, s.N}, x.options().dtype(at::kFloat));
    counters = at::zeros({plan.col_blocks}, x.options().dtype(at::kInt));
    args.partial = partial.data_ptr<float>();
    args.counters = counters.data_ptr<int>();
  }
  args.x = reinterpret_cast<const __half*>(xc.const_data_ptr<at::Half>());
  args.qweight = reinterpret_cast<const uint32_t*>(qw.const_data_ptr<int32_t>());
  args.qzeros = reinterpret_cast<const uint32_t*>(qz.const_data_ptr<int32_t>());
  args.scales = reinterpret_cast<const __half*>(sc.const_data_ptr<at::Half>());
  args.out = reinterpret_cast<__half*>(out.data_ptr<at::Half>());
  args.M = M;
  args.K = s.K;
  args.N = s.N;
  args.group_size = group_size;
  args.zeros_minus_one = checkpoint_format == 1;
  const auto stream = at::cuda::getCurrentCUDAStream().stream();
  const cudaError_t err = use_gemv ? launch_exllamav2_gemv(args, plan, stream) : launch_exllamav2_mma(args, plan, stream);
  GPTQ_CHECK(err == cudaSuccess, op, "kernel launch failed for M = ", M, ", K = ", s.K, ", N = ", s.N, ": ", cudaGetErrorString(err));
  return out;
}

}  // namespace gptq::cuda
