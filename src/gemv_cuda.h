// Torch side of the split-K GEMVs (csrc/common/gemv_launch.h): one place that aligns the operands,
// allocates the output and the workspaces, and launches.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>

#include "common/gemv_launch.h"

namespace gptq::cuda {

// y [M, N] (fp16) = x [M, K] W^T on the current stream with `launch`, planned by `plan_for(device)`.
// x (already gathered for act-order), qweight and scales are copied once when a view is not 16-byte
// aligned. Split-K workspaces come from the caching allocator, so the call is safe under CUDA graph
// capture: fp32 partial sums (fully written before they are read) and one zeroed counter per column
// strip. Errors name `op`.
at::Tensor run_gemv(const char* op, const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& qzeros,
                    const at::Tensor& scales, int64_t K, int64_t N, int64_t group_size, bool zeros_minus_one,
                    const std::function<GemvPlan(const GemvDevice&)>& plan_for, GemvLaunchFn launch);

}  // namespace gptq::cuda
