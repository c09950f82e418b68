#include "gemv_cuda.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstdlib>

#include "check.h"

namespace gptq::cuda {
namespace {

// GPTQ_GEMV_MAX_SPLITS caps the K splits of every plan (tuning only; 0 or unset: no cap).
int64_t max_splits_override() {
  static const int64_t v = [] {
    const char* e = std::getenv("GPTQ_GEMV_MAX_SPLITS");
    return e != nullptr ? std::atoll(e) : int64_t{0};
  }();
  return v;
}

}  // namespace

at::Tensor run_gemv(const char* op, const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& qzeros,
                    const at::Tensor& scales, int64_t K, int64_t N, int64_t group_size, bool zeros_minus_one,
                    const std::function<GemvPlan(const GemvDevice&)>& plan_for, GemvLaunchFn launch) {
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t M = x.size(0);
  auto out = at::empty({M, N}, x.options());
  if (M == 0 || N == 0) return out;
  if (K == 0) return out.zero_();
  // 16-byte loads of x and qweight (8-byte of scales): a view at an odd offset is copied once.
  auto aligned = [](const at::Tensor& t) {
    auto c = t.contiguous();
    return reinterpret_cast<uintptr_t>(c.const_data_ptr()) % 16 == 0 ? c : c.clone();
  };
  const auto xc = aligned(x), qw = aligned(qweight), sc = aligned(scales);
  const auto qz = qzeros.contiguous();
  const auto* props = at::cuda::getCurrentDeviceProperties();
  GemvDevice dev;
  dev.sm_count = props->multiProcessorCount;
  if (max_splits_override() > 0) dev.max_splits = max_splits_override();
  const GemvPlan plan = plan_for(dev);
  at::Tensor partial, counters;
  GemvArgs args;
  if (plan.splits > 1) {
    partial = at::empty({plan.splits, M, N}, x.options().dtype(at::kFloat));
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
  args.K = K;
  args.N = N;
  args.group_size = group_size;
  args.zeros_minus_one = zeros_minus_one;
  const cudaError_t err = launch(args, plan, at::cuda::getCurrentCUDAStream().stream());
  GPTQ_CHECK(err == cudaSuccess, op, "kernel launch failed for M = ", M, ", K = ", K, ", N = ", N, ": ",
             cudaGetErrorString(err));
  return out;
}

}  // namespace gptq::cuda
