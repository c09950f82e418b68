// The GPTQ checkpoint format: bit packing of integer codes and dequantization of packed weights.
//
// A quantized linear layer y = x W^T with W [N = out_features, K = in_features] is stored as
//   qweight int32 [K*bits/32, N]   codes q[k, n], packed along K
//   qzeros  int32 [G, N*bits/32]   zero points z[g, n], packed along N
//   scales  fp16/bf16/fp32 [G, N]  one scale per (group, output column)
//   g_idx   int32 [K]              group of each input channel (k / group_size without act-order)
// and W[n, k] = scales[g, n] * (q[k, n] - z[g, n]) with g = g_idx[k].
//
// Packing is a continuous little-endian bit stream for every width: along the packed dimension,
// value j occupies bits [bits*j, bits*j + bits) of the stream, word w holds bits [32w, 32w + 32).
// For bits 2, 4 and 8 no value straddles two words; for 3 bits 32 values fill exactly 3 words and
// values 10 and 21 straddle. The packed dimension must therefore be a multiple of 32 (3 bits) or of
// 32/bits (2, 4, 8 bits).
//
// Checkpoint formats: "gptq" (v1) stores zeros minus one, wrapped modulo 2^bits, so readers add one
// back modulo 2^bits (a true zero of 0 is stored as 2^bits-1 and decodes to 0 again). "gptq_v2"
// stores zeros as they are.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <string>

namespace gptq {

enum class CheckpointFormat : int64_t {
  kGptq = 1,    // "gptq": zeros stored minus one (v1)
  kGptqV2 = 2,  // "gptq_v2": zeros stored as they are
};

// "gptq" -> kGptq, "gptq_v2" -> kGptqV2; anything else is an error naming the value.
CheckpointFormat parse_checkpoint_format(const std::string& name);
std::string to_string(CheckpointFormat format);

// Packs integer codes along dim 0: codes [R, C] (any integer dtype, each value in [0, 2^bits)) ->
// int32 [R*bits/32, C]. R must be a multiple of 32/bits (32 for 3 bits).
at::Tensor pack_rows(const at::Tensor& codes, int64_t bits);
// Inverse of pack_rows: int32 [R*bits/32, C] -> int32 codes [R, C].
at::Tensor unpack_rows(const at::Tensor& packed, int64_t bits);
// Packs along dim 1: codes [R, C] -> int32 [R, C*bits/32] (the qzeros layout).
at::Tensor pack_cols(const at::Tensor& codes, int64_t bits);
// Inverse of pack_cols: int32 [R, C*bits/32] -> int32 codes [R, C].
at::Tensor unpack_cols(const at::Tensor& packed, int64_t bits);

// Dequantizes a packed GPTQ layer to its float weight W [N, K] (nn.Linear's layout), in the dtype of
// `scales`. `g_idx` may be undefined, in which case g = k / group_size (group_size -1: one group).
// Runs on the device of its inputs (CPU, or CUDA when the kernels were built), through the
// dispatcher op gptq::dequantize.
at::Tensor dequantize(const at::Tensor& qweight, const at::Tensor& qzeros, const at::Tensor& scales,
                      const c10::optional<at::Tensor>& g_idx, int64_t bits, int64_t group_size,
                      CheckpointFormat format);

}  // namespace gptq

namespace gptq {

// Converts packed qzeros [G, N*bits/32] between checkpoint formats: "gptq" (v1) stores zero - 1 and
// "gptq_v2" the zero itself, both modulo 2^bits, so the conversion is exact in both directions
// (unpack, add or subtract one modulo 2^bits, repack; adding 0x11111111 to a 4-bit word would carry
// into the next value when a stored zero is 15). Through the dispatcher op gptq::convert_qzeros.
at::Tensor convert_qzeros(const at::Tensor& qzeros, int64_t bits, CheckpointFormat from, CheckpointFormat to);

}  // namespace gptq
