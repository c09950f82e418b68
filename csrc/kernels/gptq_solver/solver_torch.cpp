// Torch adapter: validates like the CPU path, then launches the block kernel on the current stream.
// Blocks wider than the kernel's 128 columns are solved as 128-column sub-blocks, each followed by
// the GEMM that carries its errors to the rest of the block (the same algebra as the host's lazy
// update, one level down).
#include "solver_torch.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "check.h"
#include "kernels/gptq_solver/solver_launch.h"
#include "solver_internal.h"

namespace gptq::cuda {

void solve_block_cuda(const at::Tensor& W, const at::Tensor& U, const at::Tensor& codes, const at::Tensor& err,
                      const at::Tensor& loss, const at::Tensor& scales, const at::Tensor& zeros,
                      const at::Tensor& col_group, int64_t i1, int64_t i2, int64_t bits, bool sym, int64_t group_size,
                      bool dynamic_groups, double mse) {
  const char* op = "gptq::solve_block";
  detail::check_solve_block(op, W, U, codes, err, loss, scales, zeros, col_group, i1, i2, bits, group_size,
                            dynamic_groups);
  GPTQ_CHECK(W.is_cuda(), op, "the CUDA implementation got W on ", W.device());
  const c10::cuda::CUDAGuard guard(W.device());
  const auto stream = at::cuda::getCurrentCUDAStream().stream();
  const int64_t N = W.size(0), K = W.size(1), ld = err.size(1);
  for (int64_t a = i1; a < i2; a += kSolveBlockMaxCols) {
    const int64_t b = std::min(i2, a + kSolveBlockMaxCols);
    cudaError_t e = cudaSuccess;
    if (W.scalar_type() == at::kDouble) {
      e = launch_solve_block<double>(W.data_ptr<double>(), U.const_data_ptr<double>(), codes.data_ptr<uint8_t>(),
                                     err.data_ptr<double>() + (a - i1), ld, loss.data_ptr<double>(),
                                     scales.data_ptr<double>(), zeros.data_ptr<double>(),
                                     col_group.const_data_ptr<int32_t>(), N, K, a, static_cast<int>(b - a),
                                     static_cast<int>(bits), sym, group_size, dynamic_groups, mse, stream);
    } else {
      e = launch_solve_block<float>(W.data_ptr<float>(), U.const_data_ptr<float>(), codes.data_ptr<uint8_t>(),
                                    err.data_ptr<float>() + (a - i1), ld, loss.data_ptr<float>(),
                                    scales.data_ptr<float>(), zeros.data_ptr<float>(),
                                    col_group.const_data_ptr<int32_t>(), N, K, a, static_cast<int>(b - a),
                                    static_cast<int>(bits), sym, group_size, dynamic_groups, mse, stream);
    }
    GPTQ_CHECK(e == cudaSuccess, op, "kernel launch failed for N = ", N, ", K = ", K, ", columns [", a, ", ", b,
               "): ", cudaGetErrorString(e));
    if (b < i2) {
      W.slice(1, b, i2).sub_(at::mm(err.slice(1, a - i1, b - i1), U.slice(0, a, b).slice(1, b, i2)));
    }
  }
}

}  // namespace gptq::cuda
