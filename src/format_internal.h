// Host-side pieces of the checkpoint format shared by the CPU, CUDA and Meta implementations of the
// format ops (see include/gptq/format.h for the layout).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <vector>

namespace gptq::detail {

// Shapes of one packed layer, derived from its tensors after validation.
struct PackedLayerShape {
  int64_t K;       // in_features
  int64_t N;       // out_features
  int64_t groups;  // rows of scales / qzeros
};

// Validates (qweight, qzeros, scales, g_idx) against the format for the op `op`: dtypes, ranks,
// shapes agreeing with each other, one device. Returns K, N and the group count.
PackedLayerShape check_packed_layer(const char* op, const at::Tensor& qweight, const at::Tensor& qzeros,
                                    const at::Tensor& scales, const c10::optional<at::Tensor>& g_idx,
                                    int64_t bits, int64_t group_size, int64_t checkpoint_format);

// CPU implementations, registered in ops.cpp.
at::Tensor pack_rows_cpu(const at::Tensor& codes, int64_t bits);
at::Tensor unpack_rows_cpu(const at::Tensor& packed, int64_t bits);
at::Tensor pack_cols_cpu(const at::Tensor& codes, int64_t bits);
at::Tensor unpack_cols_cpu(const at::Tensor& packed, int64_t bits);
// Zero points as integers [G, N] from qzeros [G, N*bits/32], v1's "minus one" undone modulo 2^bits.
at::Tensor unpacked_zeros(const at::Tensor& qzeros, int64_t bits, int64_t checkpoint_format);

// Group of every input channel: g_idx when given, else k / group_size (0 for group size -1).
std::vector<int32_t> channel_groups(const c10::optional<at::Tensor>& g_idx, int64_t K, int64_t group_size);

// Columns [n0, n0 + nn) of row k of W^T in fp32 from the packed words qweight [K*bits/32, N]:
// w[n] = srow[n] * (q[k, n0 + n] - zrow[n]), where zrow and srow already point at column n0 of k's group.
void decode_row(const uint32_t* packed, int64_t N, int64_t bits, int64_t k, int64_t n0, int64_t nn,
                const float* zrow, const float* srow, float* w);

at::Tensor dequantize_cpu(const at::Tensor& qweight, const at::Tensor& qzeros, const at::Tensor& scales,
                          const c10::optional<at::Tensor>& g_idx, int64_t bits, int64_t group_size,
                          int64_t checkpoint_format);

}  // namespace gptq::detail
