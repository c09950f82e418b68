// Host-side pieces shared by the CPU, CUDA and Meta implementations of the GEMM ops.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include "format_internal.h"

namespace gptq::detail {

// Validates a GEMM call: the packed layer (check_packed_layer) plus x: 2-D [M, K], the scales'
// dtype, the layer's device. Returns K, N and the group count.
PackedLayerShape check_gemm_args(const char* op, const at::Tensor& x, const at::Tensor& qweight,
                                 const at::Tensor& qzeros, const at::Tensor& scales,
                                 const c10::optional<at::Tensor>& g_idx, int64_t bits, int64_t group_size,
                                 int64_t checkpoint_format);

}  // namespace gptq::detail
