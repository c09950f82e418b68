// Torch adapter: the act-order gather, then the half2 GEMV (M <= 4) or the tensor-core variant
// (M <= 16) where they apply (src/gemv_cuda.cpp runs them), else the AutoGPTQ-style op.
#include "exllamav2_torch.h"

#include <algorithm>
#include <cstdlib>

#include <ATen/ATen.h>

#include "autogptq_internal.h"
#include "check.h"
#include "gemv_cuda.h"
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
  auto plan_for = [&](int sm_count) {
    return use_gemv ? exllamav2_gemv_plan(M, s.K, s.N, group_size, sm_count)
                    : exllamav2_mma_plan(M, s.K, s.N, sm_count);
  };
  return run_gemv(op, xp, qweight_sorted, qzeros, scales, s.K, s.N, group_size, checkpoint_format == 1, plan_for,
                  use_gemv ? launch_exllamav2_gemv : launch_exllamav2_mma);
}

}  // namespace gptq::cuda
