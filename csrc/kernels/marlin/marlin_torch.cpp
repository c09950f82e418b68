// Torch adapter of the Marlin GEMM: validates the repacked layer against x, gathers x's columns for
// act-order layers, picks the path by M and launches on the current stream.
//
// Workspaces (allocated here per call, on the current stream's allocator): when the plan splits K
// over several CTAs, an fp32 partial buffer [splits, M, N_pad] (uninitialised: every element is
// written before it is read) and an int32 counter per output tile, zeroed; the kernel leaves the
// counters at zero again. Large M: a dense W [N, K] (K*N*2 bytes) for cuBLAS.
#include "marlin_torch.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "check.h"
#include "kernels/marlin/marlin_launch.h"
#include "marlin_internal.h"

namespace gptq::cuda {
namespace {

// Dequantizing W once (K*N*2 bytes written, then read by cuBLAS) beats the mma.sync kernel from
// some M on: the kernel stops being memory-bound near M = 32-64 and then runs at a fraction of
// cuBLAS's rate. Where, depends on the layer size (measured on the H100, benchmarks/results/
// marlin_h100_run2*.json, "paths" rows): from M = 256 on every layer; from 128 on layers up to
// 128 M weights (8192 x 28672 at M = 128: 238 us fused against 392 us dense); from 33 on layers up
// to 4096 x 4096, whose dense copy stays in the 50 MB L2 (M = 64: 25 us dense against 55 us fused).
bool use_dense(int64_t M, int64_t K, int64_t N) {
  const int64_t weights = K * N;
  return M >= 256 || (M >= 128 && weights <= (int64_t(128) << 20)) || (M > 32 && weights <= int64_t(4096) * 4096);
}

}  // namespace

at::Tensor marlin_gemm_cuda(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scales,
                            const c10::optional<at::Tensor>& zeros, const c10::optional<at::Tensor>& perm,
                            int64_t bits, int64_t group_size, int64_t size_n, int64_t mode) {
  const char* op = "gptq::marlin_gemm";
  GPTQ_CHECK(bits == 4 || bits == 8, op, "bits must be 4 or 8, got ", bits);
  GPTQ_CHECK(mode >= 0 && mode <= 2, op, "mode must be 0 (auto), 1 (fused kernel) or 2 (dequantize + cuBLAS), got ",
             mode);
  GPTQ_CHECK(x.is_cuda(), op, "x must be a CUDA tensor, got ", x.device());
  GPTQ_CHECK(x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16, op,
             "x must be float16 or bfloat16, got ", x.scalar_type());
  GPTQ_CHECK(scales.scalar_type() == x.scalar_type(), op, "scales must have x's dtype ", x.scalar_type(), ", got ",
             scales.scalar_type(), " (repack with scales converted to the activation dtype)");
  GPTQ_CHECK(x.dim() >= 1, op, "x must have at least one dimension, got shape ", x.sizes());
  GPTQ_CHECK(qweight.scalar_type() == at::kInt && qweight.dim() == 2, op,
             "qweight must be the int32 2-D tensor from marlin_repack, got ", qweight.scalar_type(), " ",
             qweight.sizes());
  GPTQ_CHECK(qweight.device() == x.device() && scales.device() == x.device(), op,
             "x, qweight and scales must be on one device, got ", x.device(), ", ", qweight.device(), ", ",
             scales.device());
  const int64_t K = x.size(-1);
  const int64_t N = size_n;
  const int64_t N_pad = qweight.size(0) * detail::kMarlinTileN;
  GPTQ_CHECK(qweight.size(1) % (2 * bits) == 0, op, "qweight has ", qweight.size(1),
             " columns, not a multiple of 2*bits = ", 2 * bits, ": not a marlin_repack output for ", bits, " bits");
  const int64_t K_pad = qweight.size(1) / (2 * bits);
  GPTQ_CHECK(K_pad == detail::round_up(std::max<int64_t>(K, 1), detail::kMarlinTileK), op, "x has K = ", K,
             " input channels but qweight was repacked for K_pad = ", K_pad, " (K rounded up to 128)");
  GPTQ_CHECK(N_pad == detail::round_up(std::max<int64_t>(N, 1), detail::kMarlinTileN), op, "size_n = ", N,
             " does not match qweight, repacked for N_pad = ", N_pad, " (N rounded up to 64)");
  const int64_t rows = detail::marlin_group_rows(group_size, K_pad);
  GPTQ_CHECK(group_size == -1 || group_size > 0, op, "group_size must be -1 or positive, got ", group_size);
  GPTQ_CHECK(detail::marlin_group_ok(rows), op, "group_size ", group_size, " is not supported (-1, 32, 64 or a multiple of 128)");
  const int64_t G_pad = (K_pad + rows - 1) / rows;
  GPTQ_CHECK(scales.dim() == 2 && scales.size(0) == G_pad && scales.size(1) == N_pad, op, "scales must be [",
             G_pad, ", ", N_pad, "] for K = ", K, ", group_size ", group_size, ", got ", scales.sizes());
  const bool has_zp = zeros.has_value() && zeros->defined();
  if (has_zp) {
    GPTQ_CHECK(zeros->sizes() == scales.sizes() && zeros->scalar_type() == scales.scalar_type() &&
                   zeros->device() == x.device(),
               op, "zeros must match scales (", scales.sizes(), ", ", scales.scalar_type(), ", ", x.device(),
               "), got ", zeros->sizes(), ", ", zeros->scalar_type(), ", ", zeros->device());
  }
  const bool has_perm = perm.has_value() && perm->defined();
  if (has_perm) {
    GPTQ_CHECK(perm->scalar_type() == at::kInt && perm->dim() == 1 && perm->size(0) == K &&
                   perm->device() == x.device(),
               op, "perm must be int32 [K] = [", K, "] on ", x.device(), ", got ", perm->scalar_type(), " ",
               perm->sizes(), " on ", perm->device());
  }

  const c10::cuda::CUDAGuard guard(x.device());
  auto out_shape = x.sizes().vec();
  out_shape.back() = N;
  auto x2 = x.reshape({-1, K});
  const int64_t M = x2.size(0);
  if (M == 0 || N == 0) return at::empty(out_shape, x.options());
  if (K == 0) return at::zeros(out_shape, x.options());
  // Act-order: sorted row k of W belongs to input channel perm[k].
  if (has_perm) x2 = x2.index_select(1, *perm);
  x2 = x2.contiguous();
  auto qw = qweight.contiguous();
  auto sc = scales.contiguous();
  at::Tensor zp = has_zp ? zeros->contiguous() : at::Tensor();
  const auto stream = at::cuda::getCurrentCUDAStream().stream();
  const bool bf16 = x.scalar_type() == at::kBFloat16;

  const bool dense = mode == 2 || (mode == 0 && use_dense(M, K, N));
  if (dense) {
    auto w = at::empty({N, K}, x.options());
    const cudaError_t err =
        bf16 ? launch_marlin_unpack<__nv_bfloat16>(qw.const_data_ptr(), sc.const_data_ptr(),
                                                   has_zp ? zp.const_data_ptr() : nullptr, w.data_ptr(), K, N, K_pad,
                                                   N_pad, rows, static_cast<int>(bits), stream)
             : launch_marlin_unpack<__half>(qw.const_data_ptr(), sc.const_data_ptr(),
                                            has_zp ? zp.const_data_ptr() : nullptr, w.data_ptr(), K, N, K_pad, N_pad,
                                            rows, static_cast<int>(bits), stream);
    GPTQ_CHECK(err == cudaSuccess, op, "dequantize launch failed for K = ", K, ", N = ", N, ": ",
               cudaGetErrorString(err));
    return at::linear(x2, w).view(out_shape);
  }

  // The kernel copies x in 16-byte chunks along K: pad rows to a multiple of 8 values with zeros.
  int64_t K_row = K;
  if (K % 8 != 0) {
    K_row = detail::round_up(K, 8);
    x2 = at::constant_pad_nd(x2, {0, K_row - K}, 0);
  }
  auto out = at::empty({M, N}, x.options());
  const MarlinPlan plan = marlin_plan(M, K_pad, N_pad, static_cast<int>(bits), bf16);
  at::Tensor partial, counters;
  if (plan.splits > 1) {
    partial = at::empty({plan.splits, M, N_pad}, x.options().dtype(at::kFloat));
    counters = at::zeros({int64_t(plan.m_chunks) * plan.ctas_n}, x.options().dtype(at::kInt));
  }
  MarlinGemmArgs args;
  args.x = x2.const_data_ptr();
  args.qweight = qw.const_data_ptr();
  args.scales = sc.const_data_ptr();
  args.zeros = has_zp ? zp.const_data_ptr() : nullptr;
  args.out = out.data_ptr();
  args.partial = plan.splits > 1 ? partial.data_ptr<float>() : nullptr;
  args.counters = plan.splits > 1 ? counters.data_ptr<int>() : nullptr;
  args.M = M;
  args.K = K_row;
  args.N = N;
  args.K_pad = K_pad;
  args.N_pad = N_pad;
  args.group_size = rows;
  args.bits = static_cast<int>(bits);
  args.splits = plan.splits;
  const cudaError_t err = bf16 ? launch_marlin_gemm<__nv_bfloat16>(args, plan, stream)
                               : launch_marlin_gemm<__half>(args, plan, stream);
  GPTQ_CHECK(err == cudaSuccess, op, "kernel launch failed for M = ", M, ", K = ", K, ", N = ", N, ", bits = ", bits,
             ": ", cudaGetErrorString(err));
  return out.view(out_shape);
}

}  // namespace gptq::cuda
