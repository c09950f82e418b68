// QuantLinear for C++ applications: a linear layer y = x W^T + b whose W is GPTQ-packed, with the
// same kernel choice as the Python gptq.nn.QuantLinear, without Python.
//
//   gptq::QuantLinear layer(qweight, qzeros, scales, g_idx, bias, /*bits=*/4, /*group_size=*/128);
//   at::Tensor y = layer.forward(x);   // x [..., in_features] -> y [..., out_features]
//
// The constructor validates the checkpoint tensors, chooses the kernel for their device (or honours an
// explicit one, refusing it with the reason when it cannot run) and repacks once for it.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <string>

#include <gptq/format.h>

namespace gptq {

enum class QuantKernel {
  kAuto,       // the fastest valid kernel below for the device, dtype and act-order
  kTorch,      // dequantize + matmul (any device; the CPU path)
  kAutogptq,   // CUDA: checkpoint layout as stored, any g_idx (gptq::autogptq_gemm)
  kExllamav2,  // CUDA: rows sorted by g_idx at load (gptq::exllamav2_gemm)
  kCutlass,    // Hopper, 4 bits: kExllamav2 plus a second copy of the weights in CUTLASS's layout for large
               // batches (gptq::cutlass_gemm); never chosen by kAuto, since it doubles the weights' memory
};

std::string to_string(QuantKernel kernel);
// "auto", "torch", "autogptq", "exllamav2", "cutlass" and AutoGPTQ's names "cuda", "cuda-old", "exllama",
// "exllamav2", "triton"; anything else is an error naming the value.
QuantKernel parse_quant_kernel(const std::string& name);

class QuantLinear {
 public:
  // qweight int32 [K*bits/32, N], qzeros int32 [G, N*bits/32], scales [G, N] (fp16/bf16/fp32),
  // g_idx int32 [K] (undefined: contiguous groups), bias [N] (undefined: none), all on one device.
  QuantLinear(at::Tensor qweight, at::Tensor qzeros, at::Tensor scales, c10::optional<at::Tensor> g_idx,
              c10::optional<at::Tensor> bias, int64_t bits, int64_t group_size,
              CheckpointFormat format = CheckpointFormat::kGptq, QuantKernel kernel = QuantKernel::kAuto);

  // x [..., in_features] in any float dtype -> [..., out_features] in x's dtype.
  at::Tensor forward(const at::Tensor& x) const;

  QuantKernel kernel() const { return kernel_; }
  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }
  int64_t bits() const { return bits_; }
  int64_t group_size() const { return group_size_; }
  // Why `kernel` cannot run this layer, or "" when it can.
  std::string unsupported_reason(QuantKernel kernel) const;
  std::string describe() const;

 private:
  at::Tensor qweight_, qzeros_, scales_, g_idx_, bias_;
  at::Tensor kernel_qweight_, kernel_g_idx_;  // what the chosen kernel reads (repacked or as stored)
  at::Tensor cutlass_weights_, cutlass_zeros_;  // kCutlass: the copy in CUTLASS's layout
  int64_t bits_, group_size_, in_features_, out_features_;
  CheckpointFormat format_;
  bool act_order_;
  QuantKernel kernel_;
};

}  // namespace gptq
