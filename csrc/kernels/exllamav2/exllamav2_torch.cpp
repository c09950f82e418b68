// Torch adapter: the act-order gather, then the half2 GEMV (small M) or the tensor-core GEMM
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

// Smallest M that takes the tensor-core GEMM. On the H100 (benchmarks/results/
// 2026-11-22_h100_regmma_bench_kernels*.txt) it beats the half2 GEMV from m = 4 on layers larger than
// 4096 x 4096 (8192 x 28672: 66 vs 108 us; 8192 x 8192: 26 vs 33 us) and from m = 5 on 4096 x 4096
// (m = 4: 14.3 vs 12.4 us). GPTQ_EXLLAMAV2_MMA_MIN_M overrides it (tuning only).
int64_t mma_min_m(int64_t K, int64_t N) {
  static const int64_t env = [] {
    const char* e = std::getenv("GPTQ_EXLLAMAV2_MMA_MIN_M");
    return e != nullptr ? std::max<int64_t>(1, std::atoll(e)) : int64_t{0};
  }();
  if (env > 0) return env;
  return K * N > int64_t{4096} * 4096 ? 4 : 5;
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
  // Rows up to mma_min_m() - 1: the half2 GEMV; from there to 16: the tensor-core GEMM.
  const bool use_gemv = fp16_4bit && M < mma_min_m(s.K, s.N) && exllamav2_gemv_supports(M, group_size);
  const bool use_mma = fp16_4bit && !use_gemv && exllamav2_mma_supports(M, group_size);
  if (!use_gemv && !use_mma) {
    return gptq::autogptq_gemm(xp, qweight_sorted, qzeros, scales, c10::nullopt, bits, group_size,
                               static_cast<CheckpointFormat>(checkpoint_format));
  }
  auto plan_for = [&](const GemvDevice& dev) {
    return use_gemv ? exllamav2_gemv_plan(M, s.K, s.N, group_size, dev) : exllamav2_mma_plan(M, s.K, s.N, dev);
  };
  return run_gemv(op, xp, qweight_sorted, qzeros, scales, s.K, s.N, group_size, checkpoint_format == 1, plan_for,
                  use_gemv ? launch_exllamav2_gemv : launch_exllamav2_mma);
}

}  // namespace gptq::cuda
