// CUDA implementation of gptq::autogptq_gemm (the exllamav2 ops are composites and need none).
#include <torch/library.h>

#include "kernels/autogptq/autogptq_torch.h"

TORCH_LIBRARY_IMPL(gptq, CUDA, m) { m.impl("autogptq_gemm", &gptq::cuda::autogptq_gemm_cuda); }
