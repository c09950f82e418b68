// Torch adapter: the act-order gather (inside the Hopper GEMM's x staging, else a kernel of its own),
// then the tensor-core GEMV (M = 2..8; bf16 from M = 1), the half2 GEMV (fp16 M = 1), the tensor-core
// GEMM (M <= 16) or, on Hopper, the warpgroup-MMA GEMM (larger M) where they apply (src/gemv_cuda.cpp
// runs them), CUTLASS's mixed-input GEMM on Hopper at M = 1024..2048, else the AutoGPTQ-style op.
#include "exllamav2_torch.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>

#include "autogptq_internal.h"
#include "check.h"
#include "gemv_cuda.h"
#include "gptq/kernels.h"
#include "kernels/exllamav2/exllamav2_launch.h"
#if defined(GPTQ_WITH_CUTLASS_MIXED)
#include "kernels/cutlass_mixed/cutlass_mixed_launch.h"
#include "kernels/cutlass_mixed/cutlass_mixed_torch.h"
#endif

namespace gptq::cuda {
namespace {

// Smallest M that takes the tensor-core GEMM. On the H100 (benchmarks/results/
// 2026-11-22_h100_regmma_bench_kernels*.txt) it beats the half2 GEMV from m = 4 on layers larger than
// 4096 x 4096 (8192 x 28672: 66 vs 108 us; 8192 x 8192: 26 vs 33 us) and from m = 5 on 4096 x 4096
// (m = 4: 14.3 vs 12.4 us). GPTQ_EXLLAMAV2_MMA_MIN_M overrides it (tuning only).
int64_t mma_min_m(int64_t K, int64_t N) {
  static const int64_t env = env_rows("GPTQ_EXLLAMAV2_MMA_MIN_M");
  if (env > 0) return env;
  return K * N > int64_t{4096} * 4096 ? 4 : 5;
}

// Rows from which the Hopper GEMM runs, and up to which (above: dequantize + cuBLAS). On the H100 it
// takes over from the tensor-core GEMM where that one starts (8192x28672 at m = 4: 60.1 against
// 61.9 us, at m = 16: 61.9 against 71.7 us; 2026-11-22_h100_int1_bk_*.txt). Against dequantize +
// cuBLAS (2026-11-22_h100_int2_bench_kernels_wgmma-to-1024.txt) it wins up to m = 512 on every layer
// larger than 4096x4096 (8192x28672 at m = 256: 237 against 429 us) and at m = 1024 wins or ties
// (8192x28672: 845 against 920 us; 11008x4096: 184 against 177 us, the one loss); on 4096x4096 it
// ties at m = 64 and loses above (m = 128: 45.5 against 29.0 us).
// GPTQ_EXLLAMAV2_WGMMA_MIN_M / _MAX_M override them (tuning only).
// bf16 from m = 2: its GEMV, in fp32 arithmetic, has more instructions a weight than the half2 one,
// and on the H100 loses to the Hopper GEMM from m = 2 (8192x28672 at m = 2: 74.6 against 56.0 us,
// m = 3: 100.9 against 55.6; benchmarks/results/2026-11-22_h100_bf16-gemv-v0_bench_kernels.txt).
int64_t wgmma_min_m(int64_t K, int64_t N, bool bf16) {
  static const int64_t env = env_rows("GPTQ_EXLLAMAV2_WGMMA_MIN_M");
  return env > 0 ? env : bf16 ? 2 : mma_min_m(K, N);
}
int64_t wgmma_max_m(int64_t K, int64_t N) {
  static const int64_t env = env_rows("GPTQ_EXLLAMAV2_WGMMA_MAX_M");
  if (env > 0) return env;
  return K * N > int64_t{4096} * 4096 ? 1024 : 64;
}

// Rows the tensor-core GEMV takes: fp16 m = 2..8, bf16 m = 1..8, on every GPU of compute capability
// 8.0 or newer (measured on the H100 only, benchmarks/results/2026-11-23_h100_s9_tcgemv-*). It
// beats the half2 GEMV from m = 2 (8192x28672: 50.1 against 57.4 us; 8192x8192: 16.8 against 18.9),
// and the Hopper GEMM up to m = 8 (8192x28672 at m = 8: 51.3 against 54.0; 8192x8192: 18.3 against
// 21.5), but not at m = 12..16 on the large layers (8192x28672 at m = 16: 64.4 against 56.2). In bf16
// it beats the fp32-arithmetic GEMV at m = 1 (8192x28672: 52.7 against 56.7 us). The half2 GEMV keeps
// fp16 m = 1 (45.5 against 51.2 us). GPTQ_EXLLAMAV2_TCGEMV_MIN_M / _MAX_M override them (tuning and
// tests; a minimum above the maximum turns it off).
int64_t tcgemv_min_m(bool bf16) {
  static const int64_t env = env_rows("GPTQ_EXLLAMAV2_TCGEMV_MIN_M");
  return env > 0 ? env : bf16 ? 1 : 2;
}
int64_t tcgemv_max_m() {
  static const int64_t env = env_rows("GPTQ_EXLLAMAV2_TCGEMV_MAX_M");
  return env > 0 ? env : 8;
}

// Rows CUTLASS's mixed-input GEMM (csrc/kernels/cutlass_mixed) takes on Hopper (fp16 and bf16; the
// thresholds come from fp16), in place of our Hopper GEMM (up to 1024 rows) and of dequantize + cuBLAS.
// It converts the weights into its own layout at every call (83 us on 8192x28672, 6 us on 4096x4096),
// so it pays only for large batches. On the H100 (benchmarks/results/2026-11-23_h100_s13_cutlass-ab_table.txt,
// the kernel forced on against off, one run each) it wins on all six layers of the issue at m = 1024
// and 2048 (8192x28672 at m = 1024: 776.9 against 812.8 us; 28672x8192: 775.3 against 878.3;
// 11008x4096: 150.9 against 181.3; 4096x4096: 57.2 against 66.9) and loses at m = 512 and below
// (8192x28672 at m = 256: 270.4 against 226.0), where the conversion is a larger share; at m = 4096
// dequantize + cuBLAS ties or wins (11008x4096: 591.2 against 621.7 us). GPTQ_EXLLAMAV2_CUTLASS_MIN_M /
// _MAX_M override them (tuning and tests).
int64_t cutlass_min_m() {
  static const int64_t env = env_rows("GPTQ_EXLLAMAV2_CUTLASS_MIN_M");
  return env > 0 ? env : 1024;
}
int64_t cutlass_max_m() {
  static const int64_t env = env_rows("GPTQ_EXLLAMAV2_CUTLASS_MAX_M");
  return env > 0 ? env : 2048;
}

#if defined(GPTQ_WITH_CUTLASS_MIXED)
// Whether the "cutlass" backend (gptq::cutlass_gemm) runs CUTLASS's GEMM on the copy of the weights it
// keeps in CUTLASS's layout (no conversion a call), else the ExLlamaV2-style kernels above: from 256 rows
// where the GEMM's 128-feature x 256-token tiles number 80 or more, so that they fill most of the 132 SMs of
// an H100 (SXM) in one wave. On the H100 (benchmarks/results/2026-11-23_h100_s14_cutlass-copy-a_ab.txt,
// one run, copy against exllamav2, us): at m = 256, 8192x28672 (224 tiles) 187.6 against 225.7 and
// 4096x11008 (86) 43.1 against 53.7, but 11008x4096 (32 tiles) 104.8 against 64.2 and 28672x8192 (64)
// 270.2 against 245.0; at m = 512, 4096x4096 (64 tiles) 44.4 against 40.0; from m = 1024 it wins on every
// layer (8192x28672 715.6 against 795.6, 4096x4096 48.1 against 55.0). GPTQ_CUTLASS_COPY_MIN_M overrides
// the rule with a plain row threshold (tuning and tests).
bool use_cutlass_copy(int64_t M, int64_t N) {
  static const int64_t env = env_rows("GPTQ_CUTLASS_COPY_MIN_M");
  if (env > 0) return M >= env;
  const int64_t tiles = (N + 127) / 128 * ((M + 255) / 256);
  return M >= 256 && tiles >= 80;
}
#endif

bool hopper() {
#if defined(GPTQ_WITH_SM90A)
  const auto* props = at::cuda::getCurrentDeviceProperties();
  return props->major == 9 && props->minor == 0;  // sm_90a code runs on 9.0 alone
#else
  return false;
#endif
}

// x [M, K] with its columns in perm's order (act-order rows sorted at load): our dependent-launch
// gather for 2-byte x (exllamav2_gather.cu), index_select otherwise.
at::Tensor gather_columns(const char* op, const at::Tensor& x, const at::Tensor& perm) {
  if (x.scalar_type() != at::kHalf && x.scalar_type() != at::kBFloat16) return x.index_select(1, perm);
  const auto xc = x.contiguous(), pc = perm.contiguous();
  auto out = at::empty(xc.sizes(), xc.options());
  const cudaError_t err = launch_gather_columns(
      reinterpret_cast<const uint16_t*>(xc.const_data_ptr()), pc.const_data_ptr<int32_t>(),
      reinterpret_cast<uint16_t*>(out.data_ptr()), xc.size(0), xc.size(1), at::cuda::getCurrentCUDAStream().stream());
  GPTQ_CHECK(err == cudaSuccess, op, "act-order gather launch failed for M = ", xc.size(0), ", K = ", xc.size(1), ": ",
             cudaGetErrorString(err));
  return out;
}

// Act-order: perm as int32 [K] on x's device (int64, which index_select also takes, is converted);
// undefined without act-order.
at::Tensor checked_perm(const char* op, const c10::optional<at::Tensor>& perm, int64_t K, const at::Tensor& x) {
  if (!perm.has_value() || !perm->defined()) return {};
  GPTQ_CHECK(perm->dim() == 1 && perm->size(0) == K, op, "perm must have shape [K] = [", K, "], got ", perm->sizes());
  GPTQ_CHECK(perm->scalar_type() == at::kInt || perm->scalar_type() == at::kLong, op,
             "perm must be int32 or int64, got ", perm->scalar_type());
  GPTQ_CHECK(perm->device() == x.device(), op, "perm must be on x's device ", x.device(), ", got ", perm->device());
  return perm->scalar_type() == at::kInt ? *perm : perm->to(at::kInt);
}

}  // namespace

at::Tensor exllamav2_gemm_cuda(const at::Tensor& x, const at::Tensor& qweight_sorted, const at::Tensor& qzeros,
                               const at::Tensor& scales, const c10::optional<at::Tensor>& perm, int64_t bits,
                               int64_t group_size, int64_t checkpoint_format) {
  const char* op = "gptq::exllamav2_gemm";
  const auto s = detail::check_gemm_args(op, x, qweight_sorted, qzeros, scales, c10::nullopt, bits, group_size,
                                         checkpoint_format);
  const at::Tensor p = checked_perm(op, perm, s.K, x);
  const int64_t M = x.size(0);
  const bool fp16_4bit = x.scalar_type() == at::kHalf && bits == 4 && s.N % 8 == 0;
  const bool bf16_4bit = x.scalar_type() == at::kBFloat16 && bits == 4 && s.N % 8 == 0;
  // tcgemv_min_m() to tcgemv_max_m(): the tensor-core GEMV (fp16 and bf16). Else rows up to
  // mma_min_m() - 1: the GEMV (half2 arithmetic for fp16, fp32 for bf16); from there to 16: the
  // tensor-core GEMM (fp16); on Hopper, wgmma_min_m() to wgmma_max_m(): the warpgroup-MMA GEMM (fp16
  // and bf16); else dequantize + cuBLAS.
  const bool on_hopper = hopper();
#if defined(GPTQ_WITH_CUTLASS_MIXED)
  if ((fp16_4bit || bf16_4bit) && on_hopper && M >= cutlass_min_m() && M <= cutlass_max_m() &&
      cutlass_mixed_supports(M, s.K, s.N, group_size)) {
    return cutlass_mixed_gemm(op, p.defined() ? gather_columns(op, x, p) : x, qweight_sorted, qzeros, scales, s.K,
                              s.N, group_size, checkpoint_format == 1);
  }
#endif
  const bool use_tcgemv = (fp16_4bit || bf16_4bit) && M >= tcgemv_min_m(bf16_4bit) && M <= tcgemv_max_m() &&
                          exllamav2_tcgemv_supports(M, group_size);
  const bool gemv_rows = M < (bf16_4bit && on_hopper ? wgmma_min_m(s.K, s.N, true) : mma_min_m(s.K, s.N));
  const bool use_gemv =
      (fp16_4bit || bf16_4bit) && !use_tcgemv && gemv_rows && exllamav2_gemv_supports(M, group_size);
  const bool use_wgmma = (fp16_4bit || bf16_4bit) && !use_tcgemv && !use_gemv &&
                         M >= wgmma_min_m(s.K, s.N, bf16_4bit) && M <= wgmma_max_m(s.K, s.N) &&
                         exllamav2_wgmma_supports(M, group_size) && on_hopper;
  const bool use_mma =
      fp16_4bit && !use_tcgemv && !use_gemv && !use_wgmma && exllamav2_mma_supports(M, group_size);
  // Every kernel but the Hopper GEMM (which gathers while it stages x) takes x already gathered.
  const at::Tensor xp = p.defined() && !use_wgmma ? gather_columns(op, x, p) : x;
  if (!use_tcgemv && !use_gemv && !use_mma && !use_wgmma) {
    return gptq::autogptq_gemm(xp, qweight_sorted, qzeros, scales, c10::nullopt, bits, group_size,
                               static_cast<CheckpointFormat>(checkpoint_format));
  }
#if defined(GPTQ_WITH_SM90A)
  if (use_wgmma) {
    return run_gemv(
        op, xp, qweight_sorted, qzeros, scales, s.K, s.N, group_size, checkpoint_format == 1,
        [&](const GemvDevice& dev) { return exllamav2_wgmma_plan(M, s.K, s.N, dev); }, launch_exllamav2_wgmma, p);
  }
#endif
  auto plan_for = [&](const GemvDevice& dev) {
    return use_tcgemv ? exllamav2_tcgemv_plan(M, s.K, s.N, group_size, bf16_4bit, dev)
           : use_gemv ? exllamav2_gemv_plan(M, s.K, s.N, group_size, bf16_4bit, dev)
                      : exllamav2_mma_plan(M, s.K, s.N, dev);
  };
  return run_gemv(op, xp, qweight_sorted, qzeros, scales, s.K, s.N, group_size, checkpoint_format == 1, plan_for,
                  use_tcgemv ? launch_exllamav2_tcgemv : use_gemv ? launch_exllamav2_gemv : launch_exllamav2_mma);
}

#if defined(GPTQ_WITH_CUTLASS_MIXED)
namespace {

// What the "cutlass" backend's ops take, beyond gptq::exllamav2_gemm's own checks.
void check_cutlass_layer(const char* op, const at::Tensor& scales, int64_t bits, int64_t K, int64_t N,
                         int64_t group_size) {
  GPTQ_CHECK(hopper(), op, "needs compute capability 9.0 (CUTLASS's Hopper GEMM), the GPU is sm_",
             at::cuda::getCurrentDeviceProperties()->major, at::cuda::getCurrentDeviceProperties()->minor);
  GPTQ_CHECK(bits == 4, op, "takes 4-bit weights, got bits = ", bits);
  GPTQ_CHECK(scales.scalar_type() == at::kHalf || scales.scalar_type() == at::kBFloat16, op,
             "takes float16 or bfloat16 scales, got ", scales.scalar_type());
  check_cutlass_mixed_shape(op, 1, K, N, group_size);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> cutlass_prepare_cuda(const at::Tensor& qweight_sorted, const at::Tensor& qzeros,
                                                        const at::Tensor& scales, int64_t bits, int64_t group_size,
                                                        int64_t checkpoint_format) {
  const char* op = "gptq::cutlass_prepare";
  GPTQ_CHECK(qweight_sorted.is_cuda(), op, "qweight_sorted must be on a CUDA device, got ", qweight_sorted.device());
  const auto s =
      detail::check_packed_layer(op, qweight_sorted, qzeros, scales, c10::nullopt, bits, group_size, checkpoint_format);
  check_cutlass_layer(op, scales, bits, s.K, s.N, group_size);
  return cutlass_mixed_convert(op, qweight_sorted, qzeros, scales, s.K, s.N, group_size, checkpoint_format == 1);
}

at::Tensor cutlass_gemm_cuda(const at::Tensor& x, const at::Tensor& qweight_sorted, const at::Tensor& qzeros,
                             const at::Tensor& scales, const c10::optional<at::Tensor>& perm,
                             const at::Tensor& cutlass_weights, const at::Tensor& cutlass_zeros, int64_t bits,
                             int64_t group_size, int64_t checkpoint_format) {
  const char* op = "gptq::cutlass_gemm";
  const auto s = detail::check_gemm_args(op, x, qweight_sorted, qzeros, scales, c10::nullopt, bits, group_size,
                                         checkpoint_format);
  check_cutlass_layer(op, scales, bits, s.K, s.N, group_size);
  const int64_t G = group_size == -1 ? 1 : s.K / group_size;
  GPTQ_CHECK(cutlass_weights.scalar_type() == at::kInt && cutlass_weights.dim() == 1 &&
                 cutlass_weights.size(0) == s.N * s.K / 8 && cutlass_weights.device() == x.device(),
             op, "cutlass_weights must be int32 [N K / 8] = [", s.N * s.K / 8, "] on ", x.device(), " (from gptq::cutlass_prepare), got ",
             cutlass_weights.scalar_type(), " ", cutlass_weights.sizes(), " on ", cutlass_weights.device());
  GPTQ_CHECK(cutlass_zeros.scalar_type() == x.scalar_type() && cutlass_zeros.dim() == 2 && cutlass_zeros.size(0) == G &&
                 cutlass_zeros.size(1) == s.N && cutlass_zeros.device() == x.device(),
             op, "cutlass_zeros must be ", x.scalar_type(), " [G, N] = [", G, ", ", s.N, "] on ", x.device(),
             " (from gptq::cutlass_prepare with these scales), got ", cutlass_zeros.scalar_type(), " ",
             cutlass_zeros.sizes(), " on ", cutlass_zeros.device());
  if (!use_cutlass_copy(x.size(0), s.N)) {
    return exllamav2_gemm_cuda(x, qweight_sorted, qzeros, scales, perm, bits, group_size, checkpoint_format);
  }
  const at::Tensor p = checked_perm(op, perm, s.K, x);
  return cutlass_mixed_gemm_converted(op, p.defined() ? gather_columns(op, x, p) : x, cutlass_weights, cutlass_zeros,
                                      scales, s.K, s.N, group_size);
}
#endif

}  // namespace gptq::cuda
