// Torch side of the split-K GEMVs (csrc/common/gemv_launch.h): one place that aligns the operands,
// allocates the output and the workspaces, and launches.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>

#include "common/gemv_launch.h"

namespace gptq::cuda {

// A row count from the environment variable `name`, for the adapters' tuning and test overrides of
// which kernel takes which M (at least 1); 0 when unset.
int64_t env_rows(const char* name);

// t contiguous at a 16-byte aligned address (16-byte vector loads, bulk and TMA copies): t itself, or a
// copy when a view starts at an odd offset.
at::Tensor aligned16(const at::Tensor& t);

// y [M, N] (fp16) = x [M, K] W^T on the current stream with `launch`, planned by `plan_for(device)`.
// `perm` (undefined, or act-order's int32 [K] channel order, checked by the caller) is passed to
// kernels that gather x themselves (GemvArgs::perm); the others take x already gathered. x, perm,
// qweight and scales are copied once when a view is not 16-byte aligned. Split-K needs fp32 partial
// sums (from the caching allocator, fully written before they are read) and one counter per column
// strip that is zero before the call and left at zero: these come from a buffer per stream, or per
// CUDA graph when capturing, zeroed once (see zeroed_counters), so the call is safe under graph
// capture and on concurrent streams. Errors name `op`.
at::Tensor run_gemv(const char* op, const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& qzeros,
                    const at::Tensor& scales, int64_t K, int64_t N, int64_t group_size, bool zeros_minus_one,
                    const std::function<GemvPlan(const GemvDevice&)>& plan_for, GemvLaunchFn launch,
                    const at::Tensor& perm = at::Tensor());

}  // namespace gptq::cuda
