// CUDA registration of gptq::solve_block (built only with the kernels).
#include <torch/library.h>

#include "kernels/gptq_solver/solver_torch.h"

TORCH_LIBRARY_IMPL(gptq, CUDA, m) { m.impl("solve_block", &gptq::cuda::solve_block_cuda); }
