// Torch adapter: validates the packed layer (the same checks as the CPU path), allocates W [N, K] on
// the inputs' device and launches on the current stream.
#include "dequant_torch.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "check.h"
#include "format_internal.h"
#include "kernels/dequant/dequant_launch.h"

namespace gptq::cuda {

at::Tensor dequantize_cuda(const at::Tensor& qweight, const at::Tensor& qzeros, const at::Tensor& scales,
                           const c10::optional<at::Tensor>& g_idx, int64_t bits, int64_t group_size,
                           int64_t checkpoint_format) {
  const char* op = "gptq::dequantize";
  const auto s = detail::check_packed_layer(op, qweight, qzeros, scales, g_idx, bits, group_size, checkpoint_format);
  GPTQ_CHECK(qweight.is_cuda(), op, "the CUDA implementation got a tensor on ", qweight.device());
  const c10::cuda::CUDAGuard guard(qweight.device());
  auto qw = qweight.contiguous();
  auto qz = qzeros.contiguous();
  auto sc = scales.contiguous();
  at::Tensor gi;
  if (g_idx.has_value() && g_idx->defined()) gi = g_idx->contiguous();
  auto out = at::empty({s.N, s.K}, scales.options());
  if (out.numel() == 0) return out;
  const auto* qw_p = reinterpret_cast<const uint32_t*>(qw.const_data_ptr<int32_t>());
  const auto* qz_p = reinterpret_cast<const uint32_t*>(qz.const_data_ptr<int32_t>());
  const int32_t* gi_p = gi.defined() ? gi.const_data_ptr<int32_t>() : nullptr;
  const bool minus_one = checkpoint_format == 1;
  const auto stream = at::cuda::getCurrentCUDAStream().stream();
  cudaError_t err = cudaSuccess;
  switch (scales.scalar_type()) {
    case at::kHalf:
      err = launch_dequantize<__half>(qw_p, qz_p, reinterpret_cast<const __half*>(sc.const_data_ptr<at::Half>()), gi_p,
                                      reinterpret_cast<__half*>(out.data_ptr<at::Half>()), s.K, s.N, bits, group_size,
                                      minus_one, stream);
      break;
    case at::kBFloat16:
      err = launch_dequantize<__nv_bfloat16>(
          qw_p, qz_p, reinterpret_cast<const __nv_bfloat16*>(sc.const_data_ptr<at::BFloat16>()), gi_p,
          reinterpret_cast<__nv_bfloat16*>(out.data_ptr<at::BFloat16>()), s.K, s.N, bits, group_size, minus_one,
          stream);
      break;
    default:
      err = launch_dequantize<float>(qw_p, qz_p, sc.const_data_ptr<float>(), gi_p, out.data_ptr<float>(), s.K, s.N,
                                     bits, group_size, minus_one, stream);
  }
  GPTQ_CHECK(err == cudaSuccess, op, "kernel launch failed for K = ", s.K, ", N = ", s.N, ", bits = ", bits, ": ",
             cudaGetErrorString(err));
  return out;
}

}  // namespace gptq::cuda
