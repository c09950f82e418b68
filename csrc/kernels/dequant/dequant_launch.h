// Launcher for the dequantize kernel: packed GPTQ layer -> float weight W [N, K] (nn.Linear layout).
// Raw pointers and a stream; the torch adapter (dequant_torch.cpp) validates shapes first.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace gptq::cuda {

// qweight [K*bits/32, N], qzeros [G, N*bits/32], scales [G, N] (T), g_idx [K] or nullptr (then
// g = k / group_size, or 0 when group_size == -1), out [N, K] (T). zeros_minus_one: checkpoint
// format "gptq" (v1), whose stored zeros are one less than the true ones, modulo 2^bits.
// T is __half, __nv_bfloat16 or float. K is a multiple of 32/bits (32 for 3 bits), as the packing
// requires; out must be 16-byte aligned (any at::empty allocation is).
template <typename T>
cudaError_t launch_dequantize(const uint32_t* qweight, const uint32_t* qzeros, const T* scales,
                              const int32_t* g_idx, T* out, int64_t K, int64_t N, int bits, int64_t group_size,
                              bool zeros_minus_one, cudaStream_t stream);

}  // namespace gptq::cuda
