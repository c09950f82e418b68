// Launcher for the ExLlamaV2-style GEMV: fp16 activations, 4-bit weights with contiguous groups (act-order
// layers have their rows sorted by group at load, gptq::exllamav2_prepare), M = 1.
//
// Where the AutoGPTQ-style kernel decodes one weight per instruction into fp32, this one decodes two
// per instruction into a half2 and multiplies in half2, as ExLlamaV2 does: a LOP3 merges the nibble
// pair (k, k+4) of a word into the mantissas of 1024.0h (0x6400), one HSUB2 with (1024 + z) leaves
// the exact integers v - z, and one HFMA2 multiplies them with x. The half2 partial sums cover one
// packed word (8 input channels) and are then added into fp32 accumulators, and the group scale is
// applied in fp32 at group boundaries, so rounding stays at the level of fp16 products.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace gptq::cuda {

// Bytes of fp32 workspace the launch needs (split-K partial sums; 0 when one split suffices).
int64_t exllamav2_workspace_bytes(int64_t K, int64_t N, int sm_count);

// x [1, K] fp16 (already gathered by the act-order permutation), qweight [K/8, N] with contiguous groups,
// qzeros [G, N/8], scales [G, N] fp16, out [1, N]. group_size -1 or a multiple of 8; N % 4 == 0.
cudaError_t launch_exllamav2_gemv(const __half* x, const uint32_t* qweight, const uint32_t* qzeros,
                                  const __half* scales, __half* out, float* workspace, int64_t K, int64_t N,
                                  int64_t group_size, bool zeros_minus_one, int sm_count, cudaStream_t stream);

}  // namespace gptq::cuda
