// Torch adapter: validates, allocates the output and the split-K workspace through the caching
// allocator (so the op is safe under CUDA graph capture), and launches on the current stream.
#include "autogptq_torch.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "autogptq_internal.h"
#include "check.h"
#include "format_internal.h"
#include "gemv_cuda.h"
#include "kernels/autogptq/autogptq_launch.h"

namespace gptq::cuda {
namespace {

// Rows the 3-bit tensor-core GEMV takes (fp16, no g_idx). GPTQ_AUTOGPTQ_TCGEMV3_MIN_M / _MAX_M
// override them (tuning and tests; a minimum above the maximum turns it off).
int64_t tcgemv3_min_m() {
  static const int64_t env = env_rows("GPTQ_AUTOGPTQ_TCGEMV3_MIN_M");
  return env > 0 ? env : 2;
}
int64_t tcgemv3_max_m() {
  static const int64_t env = env_rows("GPTQ_AUTOGPTQ_TCGEMV3_MAX_M");
  return env > 0 ? env : 16;
}
// Whether the 2- and 8-bit tensor-core GEMV takes this call (fp16, no g_idx, checked by the caller):
// m = 2..16, and m = 1 where its blocks fit one wave (tcgemv28_one_wave).
// GPTQ_AUTOGPTQ_TCGEMV28_MIN_M / _MAX_M override the range (tuning and tests).
bool use_tcgemv28(int64_t M, int64_t K, int64_t N, int64_t bits, int64_t group_size) {
  static const int64_t env_min = env_rows("GPTQ_AUTOGPTQ_TCGEMV28_MIN_M");
  static const int64_t env_max = env_rows("GPTQ_AUTOGPTQ_TCGEMV28_MAX_M");
  if (!tcgemv28_supports(M, K, N, group_size, bits)) return false;
  if (M > (env_max > 0 ? env_max : 16)) return false;
  if (env_min > 0) return M >= env_min;
  return M >= 2 ||
         tcgemv28_one_wave(K, N, bits, group_size, at::cuda::getCurrentDeviceProperties()->multiProcessorCount);
}

}  // namespace

at::Tensor autogptq_gemm_cuda(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& qzeros,
                              const at::Tensor& scales, const c10::optional<at::Tensor>& g_idx, int64_t bits,
                              int64_t group_size, int64_t checkpoint_format) {
  const char* op = "gptq::autogptq_gemm";
  const auto s = detail::check_gemm_args(op, x, qweight, qzeros, scales, g_idx, bits, group_size, checkpoint_format);
  GPTQ_CHECK(qweight.is_cuda() && x.is_cuda(), op, "the CUDA implementation got x on ", x.device(), " and qweight on ",
             qweight.device());
  GPTQ_CHECK(scales.scalar_type() == at::kHalf || scales.scalar_type() == at::kBFloat16, op,
             "the CUDA kernel takes float16 or bfloat16 scales and activations, got ", scales.scalar_type());
  const c10::cuda::CUDAGuard guard(qweight.device());
  const int64_t M = x.size(0);
  const bool has_g_idx = g_idx.has_value() && g_idx->defined();
  if (bits == 3 && x.scalar_type() == at::kHalf && !has_g_idx && M >= tcgemv3_min_m() && M <= tcgemv3_max_m() &&
      tcgemv3_supports(M, s.K, s.N, group_size)) {
    // The 3-bit tensor-core GEMV (autogptq_tcgemv3.cu).
    return run_gemv(
        op, x, qweight, qzeros, scales, s.K, s.N, group_size, checkpoint_format == 1,
        [&](const GemvDevice& dev) { return tcgemv3_plan(M, s.K, s.N, dev); }, launch_tcgemv3);
  }
  if ((bits == 2 || bits == 8) && x.scalar_type() == at::kHalf && !has_g_idx &&
      use_tcgemv28(M, s.K, s.N, bits, group_size)) {
    // The 2- and 8-bit tensor-core GEMV (autogptq_tcgemv28.cu).
    return run_gemv(
        op, x, qweight, qzeros, scales, s.K, s.N, group_size, checkpoint_format == 1,
        [&](const GemvDevice& dev) { return tcgemv28_plan(M, s.K, s.N, bits, group_size, dev); },
        bits == 2 ? launch_tcgemv28<2> : launch_tcgemv28<8>);
  }
  if (bits == 3 && x.scalar_type() == at::kHalf && !has_g_idx && gemv3_supports(M, s.K, s.N, group_size)) {
    // The 3-bit half2 GEMV (autogptq_gemv3.cu).
    return run_gemv(
        op, x, qweight, qzeros, scales, s.K, s.N, group_size, checkpoint_format == 1,
        [&](const GemvDevice& dev) { return gemv3_plan(M, s.K, s.N, group_size, dev); }, launch_gemv3);
  }
  auto out = at::empty({M, s.N}, x.options());
  if (M == 0 || s.N == 0) return out;
  if (s.K == 0) return out.zero_();
  const c10::optional<at::Tensor> gi = has_g_idx ? c10::optional<at::Tensor>(g_idx->contiguous()) : c10::nullopt;
  // Above kGemvMaxRows rows, and from 2 rows where g_idx is given (act-order read per input channel,
  // a scale and zero lookup per channel instead of per group): W^T [K, N] in one streaming pass, then
  // cuBLAS. With act-order the GEMV lost from m = 4 on the H100 (8192x28672: 475.6 us at m = 4 and
  // 1781 at m = 16, where dequantize + cuBLAS took about 350; 4096x4096: 52.1 and 170.2 against about
  // 25; benchmarks/results/2026-11-22_h100_s6final_bench_kernels.txt) and scales linearly in m from
  // its m = 1 time (260.9 and 27.3 us), so at m = 2 it is about even on the largest layer and behind on
  // the others.
  if (M > kGemvMaxRows || (has_g_idx && M > 1)) {
    auto wt = at::empty({s.K, s.N}, scales.options());
    auto qw = qweight.contiguous();
    auto qz = qzeros.contiguous();
    auto sc = scales.contiguous();
    const auto* qw_p = reinterpret_cast<const uint32_t*>(qw.const_data_ptr<int32_t>());
    const auto* qz_p = reinterpret_cast<const uint32_t*>(qz.const_data_ptr<int32_t>());
    const int32_t* gi_p = gi.has_value() ? gi->const_data_ptr<int32_t>() : nullptr;
    const auto stream = at::cuda::getCurrentCUDAStream().stream();
    cudaError_t err;
    if (scales.scalar_type() == at::kHalf) {
      err = launch_dequantize_kn<__half>(qw_p, qz_p, reinterpret_cast<const __half*>(sc.const_data_ptr<at::Half>()),
                                         gi_p, reinterpret_cast<__half*>(wt.data_ptr<at::Half>()), s.K, s.N,
                                         static_cast<int>(bits), group_size, checkpoint_format == 1, stream);
    } else {
      err = launch_dequantize_kn<__nv_bfloat16>(
          qw_p, qz_p, reinterpret_cast<const __nv_bfloat16*>(sc.const_data_ptr<at::BFloat16>()), gi_p,
          reinterpret_cast<__nv_bfloat16*>(wt.data_ptr<at::BFloat16>()), s.K, s.N, static_cast<int>(bits),
          group_size, checkpoint_format == 1, stream);
    }
    GPTQ_CHECK(err == cudaSuccess, op, "dequantize launch failed for K = ", s.K, ", N = ", s.N, ": ",
               cudaGetErrorString(err));
    return at::matmul(x, wt);
  }
  auto xc = x.contiguous();
  auto qw = qweight.contiguous();
  auto qz = qzeros.contiguous();
  auto sc = scales.contiguous();
  const int sm_count = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t ws_bytes = autogptq_workspace_bytes(M, s.K, s.N, static_cast<int>(bits), sm_count);
  at::Tensor ws;
  if (ws_bytes > 0) ws = at::empty({ws_bytes / 4}, x.options().dtype(at::kFloat));
  const auto* qw_p = reinterpret_cast<const uint32_t*>(qw.const_data_ptr<int32_t>());
  const auto* qz_p = reinterpret_cast<const uint32_t*>(qz.const_data_ptr<int32_t>());
  const int32_t* gi_p = gi.has_value() ? gi->const_data_ptr<int32_t>() : nullptr;
  float* ws_p = ws.defined() ? ws.data_ptr<float>() : nullptr;
  const bool minus_one = checkpoint_format == 1;
  const auto stream = at::cuda::getCurrentCUDAStream().stream();
  cudaError_t err;
  if (x.scalar_type() == at::kHalf) {
    err = launch_autogptq_gemm<__half>(reinterpret_cast<const __half*>(xc.const_data_ptr<at::Half>()), qw_p, qz_p,
                                       reinterpret_cast<const __half*>(sc.const_data_ptr<at::Half>()), gi_p,
                                       reinterpret_cast<__half*>(out.data_ptr<at::Half>()), ws_p, M, s.K, s.N,
                                       static_cast<int>(bits), group_size, minus_one, sm_count, stream);
  } else {
    err = launch_autogptq_gemm<__nv_bfloat16>(
        reinterpret_cast<const __nv_bfloat16*>(xc.const_data_ptr<at::BFloat16>()), qw_p, qz_p,
        reinterpret_cast<const __nv_bfloat16*>(sc.const_data_ptr<at::BFloat16>()), gi_p,
        reinterpret_cast<__nv_bfloat16*>(out.data_ptr<at::BFloat16>()), ws_p, M, s.K, s.N, static_cast<int>(bits),
        group_size, minus_one, sm_count, stream);
  }
  GPTQ_CHECK(err == cudaSuccess, op, "kernel launch failed for M = ", M, ", K = ", s.K, ", N = ", s.N, ", bits = ",
             bits, ": ", cudaGetErrorString(err));
  return out;
}

}  // namespace gptq::cuda
