// CUTLASS's mixed-input GEMM for fp16 activations (cutlass_mixed_gemm.cuh): one instantiation a file.
#include "cutlass_mixed_gemm.cuh"

namespace gptq::cuda {

size_t cutlass_mixed_gemm_workspace_bytes_f16(int64_t M, int64_t K, int64_t N, int64_t group_size) {
  return workspace_bytes<MixedGemm<cutlass::half_t>>(M, K, N, group_size);
}

cudaError_t launch_cutlass_mixed_f16(const CutlassMixedArgs& args, cudaStream_t stream) {
  return launch<MixedGemm<cutlass::half_t>, __half>(args, stream);
}

}  // namespace gptq::cuda
