// Launcher for the large-batch 4-bit GEMM on Hopper: CUTLASS's mixed-input GEMM (int4 weights
// converted to fp16 or bf16 in registers, wgmma, TMA loads, two consumer warpgroups and a producer
// warp), built from the CUTLASS 4 headers of the nvidia-cutlass wheel. Compiled for sm_90a only; the op
// takes it on compute capability 9.0 for a range of batch sizes (exllamav2_torch.cpp, cutlass_min_m).
//
// The problem is transposed as in our Hopper GEMM: output features are CUTLASS's M (operand A, the
// narrow one, which wgmma takes from registers), tokens its N (operand B, x, K-major in shared memory),
// and out [tokens, features] is D column-major. Tiles are 128 features x 256 tokens x 64 channels.
//
// CUTLASS reads the weights in a layout of its own: per 16 features x 16 channels (the A fragment of a
// warp for one k16 step), the 8 codes each lane holds lie in one 32-bit word, in the nibble order
// 0,2,4,6,1,3,5,7 that its int4 -> fp16 conversion takes. The checkpoint layout (8 channels of one
// feature a word, words along features) is converted into it at every call, into `weights_ws`: that
// costs a read and a write of the packed weights (N K bytes in all; 83 us on 8192x28672 with the zero
// points, under the profiler), which we take over keeping a second copy of every layer's weights. Zero
// points enter as CUTLASS's additive term: w = q s + z' with z' = -z s rounded to the activations'
// type ([G, N], `zeros_ws`, made by the same conversion kernel).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace gptq::cuda {

struct CutlassMixedArgs {
  const uint16_t* x = nullptr;        // [M, K] fp16 or bf16 bits, 16-byte aligned
  const uint32_t* qweight = nullptr;  // [K / 8, N] checkpoint layout (act-order rows already sorted)
  const uint32_t* qzeros = nullptr;   // [G, N / 8]
  const uint16_t* scales = nullptr;   // [G, N] as x, 16-byte aligned
  uint16_t* out = nullptr;            // [M, N] as x, 16-byte aligned
  uint32_t* weights_ws = nullptr;     // N K / 8 words, 128-byte aligned: the weights in CUTLASS's layout
  uint16_t* zeros_ws = nullptr;       // [G, N] as x, 16-byte aligned: -z s
  void* gemm_ws = nullptr;            // cutlass_mixed_gemm_workspace_bytes(), 16-byte aligned
  int64_t M = 0, K = 0, N = 0;
  int64_t group_size = -1;            // -1 (one group of K) or a multiple of 64 that divides K
  bool zeros_minus_one = false;       // GPTQ v1 checkpoints store z - 1
  bool bf16 = false;                  // x, scales, out and zeros_ws are bf16; else fp16
  // The two steps of a call. A layer that keeps its weights in CUTLASS's layout (the "cutlass" backend,
  // gptq::cutlass_prepare) converts once at load (gemm = false; x, out and M unused) and then runs the GEMM
  // alone on that copy (convert = false; qweight and qzeros unused).
  bool convert = true;
  bool gemm = true;
};

// What the kernel takes: fp16 or bf16, K a multiple of 64 (the tile's channels), N a multiple of 16 (the
// layout's 16-feature blocks), groups of K or of a multiple of 64 channels that divides K.
inline bool cutlass_mixed_supports(int64_t M, int64_t K, int64_t N, int64_t group_size) {
  const int64_t int_max = 2147483647;  // CUTLASS's problem shape is int
  return M >= 1 && M <= int_max && K >= 64 && K <= int_max && K % 64 == 0 && N >= 16 && N <= int_max &&
         N % 16 == 0 && (group_size == -1 || (group_size > 0 && group_size % 64 == 0 && K % group_size == 0));
}

// Scratch for CUTLASS's tile scheduler (bytes; 0 with the persistent scheduler used here).
size_t cutlass_mixed_gemm_workspace_bytes_f16(int64_t M, int64_t K, int64_t N, int64_t group_size);
size_t cutlass_mixed_gemm_workspace_bytes_bf16(int64_t M, int64_t K, int64_t N, int64_t group_size);
inline size_t cutlass_mixed_gemm_workspace_bytes(int64_t M, int64_t K, int64_t N, int64_t group_size, bool bf16) {
  return bf16 ? cutlass_mixed_gemm_workspace_bytes_bf16(M, K, N, group_size)
              : cutlass_mixed_gemm_workspace_bytes_f16(M, K, N, group_size);
}

// Converts the weights and zero points into the workspaces (args.convert), then runs the GEMM (args.gemm),
// on `stream`. cudaErrorInvalidValue if CUTLASS refuses the problem (can_implement), after no launch.
cudaError_t launch_cutlass_mixed_f16(const CutlassMixedArgs& args, cudaStream_t stream);
cudaError_t launch_cutlass_mixed_bf16(const CutlassMixedArgs& args, cudaStream_t stream);
inline cudaError_t launch_cutlass_mixed(const CutlassMixedArgs& args, cudaStream_t stream) {
  return args.bf16 ? launch_cutlass_mixed_bf16(args, stream) : launch_cutlass_mixed_f16(args, stream);
}

}  // namespace gptq::cuda
