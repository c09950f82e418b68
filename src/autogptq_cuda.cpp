// CUDA implementations of gptq::autogptq_gemm and gptq::exllamav2_gemm (exllamav2_prepare is a
// composite of other ops and needs none).
#include <torch/library.h>

#include "kernels/autogptq/autogptq_torch.h"
#include "kernels/exllamav2/exllamav2_torch.h"

TORCH_LIBRARY_IMPL(gptq, CUDA, m) {
  m.impl("autogptq_gemm", &gptq::cuda::autogptq_gemm_cuda);
  m.impl("exllamav2_gemm", &gptq::cuda::exllamav2_gemm_cuda);
#if defined(GPTQ_WITH_CUTLASS_MIXED)
  m.impl("cutlass_prepare", &gptq::cuda::cutlass_prepare_cuda);
  m.impl("cutlass_gemm", &gptq::cuda::cutlass_gemm_cuda);
#endif
}
