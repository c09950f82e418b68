// CUDA registrations of the Marlin ops: the GEMM (csrc/kernels/marlin) and the repack, whose tensor-op
// implementation (src/marlin.cpp) runs on the GPU as it is.
#include <torch/library.h>

#include "kernels/marlin/marlin_torch.h"
#include "marlin_internal.h"

TORCH_LIBRARY_IMPL(gptq, CUDA, m) {
  m.impl("marlin_repack", &gptq::detail::marlin_repack_impl);
  m.impl("marlin_gemm", &gptq::cuda::marlin_gemm_cuda);
}
