// gptq::QuantLinear (include/gptq/quant_linear.h): kernel choice and the one-time repack, then
// forward through the dispatcher ops.
#include "gptq/quant_linear.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include "check.h"
#include "format_internal.h"
#include "gptq/kernels.h"
#if defined(GPTQ_WITH_CUDA)
#include <ATen/cuda/CUDAContext.h>
#endif

namespace gptq {

std::string to_string(QuantKernel kernel) {
  switch (kernel) {
    case QuantKernel::kAuto: return "auto";
    case QuantKernel::kTorch: return "torch";
    case QuantKernel::kAutogptq: return "autogptq";
    case QuantKernel::kExllamav2: return "exllamav2";
    case QuantKernel::kCutlass: return "cutlass";
  }
  return "unknown";
}

QuantKernel parse_quant_kernel(const std::string& name) {
  if (name == "auto") return QuantKernel::kAuto;
  if (name == "torch" || name == "cpu" || name == "pytorch") return QuantKernel::kTorch;
  if (name == "autogptq" || name == "cuda" || name == "cuda-old" || name == "triton") return QuantKernel::kAutogptq;
  if (name == "exllamav2" || name == "exllama") return QuantKernel::kExllamav2;
  if (name == "cutlass") return QuantKernel::kCutlass;
  TORCH_CHECK(false, "gptq::QuantLinear: kernel must be one of {auto, torch, autogptq, exllamav2, cutlass} or an AutoGPTQ "
              "name {cpu, cuda, cuda-old, triton, exllama}, got \"", name, "\"");
}

namespace {

bool has_cuda_kernel(const char* op) {
  auto handle = c10::Dispatcher::singleton().findOp({op, ""});
  return handle.has_value() && handle->hasKernelForDispatchKey(c10::DispatchKey::CUDA);
}

at::Tensor contiguous_groups(int64_t K, int64_t group_size, const at::TensorOptions& opts) {
  auto ar = at::arange(K, opts.dtype(at::kInt));
  return group_size == -1 ? at::zeros_like(ar) : ar.div(group_size, "floor");
}

}  // namespace

QuantLinear::QuantLinear(at::Tensor qweight, at::Tensor qzeros, at::Tensor scales, c10::optional<at::Tensor> g_idx,
                         c10::optional<at::Tensor> bias, int64_t bits, int64_t group_size, CheckpointFormat format,
                         QuantKernel kernel)
    : qweight_(std::move(qweight)), qzeros_(std::move(qzeros)), scales_(std::move(scales)), bits_(bits),
      group_size_(group_size), format_(format) {
  const char* op = "gptq::QuantLinear";
  const auto s = detail::check_packed_layer(op, qweight_, qzeros_, scales_, g_idx, bits, group_size,
                                            static_cast<int64_t>(format));
  in_features_ = s.K;
  out_features_ = s.N;
  const auto groups = contiguous_groups(s.K, group_size, qweight_.options());
  g_idx_ = g_idx.has_value() && g_idx->defined() ? g_idx->contiguous() : groups;
  act_order_ = !at::equal(g_idx_, groups);
  if (bias.has_value() && bias->defined()) {
    GPTQ_CHECK(bias->dim() == 1 && bias->size(0) == s.N, op, "bias must have shape [N] = [", s.N, "], got ",
               bias->sizes());
    bias_ = bias->to(scales_.device());
  }
  if (kernel == QuantKernel::kAuto) {
    kernel = QuantKernel::kTorch;
    for (auto k : {QuantKernel::kExllamav2, QuantKernel::kAutogptq}) {
      if (unsupported_reason(k).empty()) {
        kernel = k;
        break;
      }
    }
    // exllamav2 first: its half2 GEMV is the faster one at M = 1 (fp16, 4 bits; other cases run the
    // autogptq kernel inside it), and it needs a repacked copy only for act-order layers. On the CPU,
    // autogptq: gptq::autogptq_gemm's fused GEMV for M <= 16 (about 9x dequantize + matmul at M = 1).
  } else {
    const auto why = unsupported_reason(kernel);
    GPTQ_CHECK(why.empty(), op, "kernel \"", to_string(kernel), "\" cannot run ", describe(), ": ", why);
  }
  kernel_ = kernel;
  kernel_qweight_ = qweight_;
  if ((kernel_ == QuantKernel::kExllamav2 || kernel_ == QuantKernel::kCutlass) && act_order_) {
    auto [sorted, perm] = exllamav2_prepare(qweight_, g_idx_, bits_, group_size_);
    kernel_qweight_ = sorted;
    kernel_g_idx_ = perm;
  } else if (kernel_ == QuantKernel::kAutogptq && act_order_) {
    kernel_g_idx_ = g_idx_;
  }
  if (kernel_ == QuantKernel::kCutlass) {
    std::tie(cutlass_weights_, cutlass_zeros_) =
        cutlass_prepare(kernel_qweight_, qzeros_, scales_, bits_, group_size_, format_);
  }
}

std::string QuantLinear::unsupported_reason(QuantKernel kernel) const {
  if (kernel == QuantKernel::kTorch || kernel == QuantKernel::kAuto) return "";
  // gptq::autogptq_gemm has a CPU kernel (every bit width, g_idx, fp32/fp16/bf16 scales).
  if (kernel == QuantKernel::kAutogptq && qweight_.is_cpu()) return "";
  if (!qweight_.is_cuda()) return "needs a CUDA device, the layer is on " + qweight_.device().str();
  if (!has_cuda_kernel("gptq::autogptq_gemm")) return "this build of gptq has no CUDA kernels";
  if (scales_.scalar_type() != at::kHalf && scales_.scalar_type() != at::kBFloat16)
    return std::string("takes float16 or bfloat16 scales, the layer has ") + c10::toString(scales_.scalar_type());
  if (kernel == QuantKernel::kCutlass) {
    if (!has_cuda_kernel("gptq::cutlass_gemm")) return "this build of gptq has no CUTLASS GEMM (built without its headers)";
#if defined(GPTQ_WITH_CUDA)  // has_cuda_kernel is false in other builds
    const auto* props = at::cuda::getDeviceProperties(qweight_.device().index());
    if (props->major != 9 || props->minor != 0)
      return "needs compute capability 9.0 (CUTLASS's Hopper GEMM), the GPU is sm_" + std::to_string(props->major) +
             std::to_string(props->minor);
#endif
    if (bits_ != 4) return "takes 4-bit weights, the layer has " + std::to_string(bits_);
    if (in_features_ % 64 != 0 || out_features_ % 16 != 0)
      return "needs in_features a multiple of 64 and out_features of 16, the layer has " +
             std::to_string(in_features_) + " x " + std::to_string(out_features_);
    if (group_size_ != -1 && (group_size_ % 64 != 0 || in_features_ % group_size_ != 0))
      return "needs group_size -1 or a multiple of 64 dividing in_features, the layer has " +
             std::to_string(group_size_);
  }
  if ((kernel == QuantKernel::kExllamav2 || kernel == QuantKernel::kCutlass) && act_order_) {
    auto sorted = std::get<0>(at::sort(g_idx_.to(at::kLong)));
    auto expected = contiguous_groups(in_features_, group_size_, qweight_.options()).to(at::kLong);
    if (!at::equal(sorted, expected))
      return "its g_idx does not give every group exactly group_size channels, so rows cannot be sorted into "
             "contiguous groups";
  }
  return "";
}

std::string QuantLinear::describe() const {
  return "QuantLinear(in=" + std::to_string(in_features_) + ", out=" + std::to_string(out_features_) +
         ", bits=" + std::to_string(bits_) + ", group_size=" + std::to_string(group_size_) +
         ", act_order=" + (act_order_ ? "true" : "false") + ", format=" + to_string(format_) +
         ", device=" + qweight_.device().str() + ")";
}

at::Tensor QuantLinear::forward(const at::Tensor& x) const {
  GPTQ_CHECK(x.dim() >= 1 && x.size(-1) == in_features_, "gptq::QuantLinear::forward", "x must have shape [..., ",
             in_features_, "], got ", x.sizes());
  auto out_sizes = x.sizes().vec();
  out_sizes.back() = out_features_;
  auto x2 = x.reshape({-1, in_features_});
  at::Tensor y;
  switch (kernel_) {
    case QuantKernel::kExllamav2: {
      c10::optional<at::Tensor> perm;
      if (kernel_g_idx_.defined()) perm = kernel_g_idx_;
      y = exllamav2_gemm(x2.to(scales_.scalar_type()), kernel_qweight_, qzeros_, scales_, perm, bits_, group_size_,
                         format_);
      break;
    }
    case QuantKernel::kCutlass: {
      c10::optional<at::Tensor> perm;
      if (kernel_g_idx_.defined()) perm = kernel_g_idx_;
      y = cutlass_gemm(x2.to(scales_.scalar_type()), kernel_qweight_, qzeros_, scales_, perm, cutlass_weights_,
                       cutlass_zeros_, bits_, group_size_, format_);
      break;
    }
    case QuantKernel::kAutogptq: {
      c10::optional<at::Tensor> gi;
      if (kernel_g_idx_.defined()) gi = kernel_g_idx_;
      y = autogptq_gemm(x2.to(scales_.scalar_type()), kernel_qweight_, qzeros_, scales_, gi, bits_, group_size_,
                        format_);
      break;
    }
    default: {
      auto w = dequantize(qweight_, qzeros_, scales_, g_idx_, bits_, group_size_, format_);
      y = at::matmul(x2.to(w.scalar_type()), w.t());
    }
  }
  if (bias_.defined()) y = y + bias_.to(y.scalar_type());
  return y.reshape(out_sizes).to(x.scalar_type());
}

}  // namespace gptq
