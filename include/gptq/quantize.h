// GPTQ for one linear layer: Hessian accumulation from its inputs, the solver, round-to-nearest, and
// packing of the result into the GPTQ checkpoint format (include/gptq/format.h).
//
// Notation: W [N = out_features, K = in_features] (nn.Linear's weight), inputs x [..., K],
// H = (2/n) sum_t x_t x_t^T [K, K] over n counted tokens. GPTQ minimises ||(W - Q) X||^2 row by row
// (Frantar et al. 2023), quantizing one column at a time and spreading each column's error over the
// columns not yet quantized through the upper Cholesky factor U of H^-1 (U^T U = H^-1).
//
// Order of operations (IST-DASLab/gptq fasterquant, which AutoGPTQ copies):
//   1. group_size == -1: one (scale, zero) per row, from the ORIGINAL row.
//   2. dead inputs (diag(H) == 0): H[d, d] = 1, W[:, d] = 0.
//   3. static_groups: (scale, zero) of every original group [g*gs, (g+1)*gs), from W after step 2.
//   4. desc_act: perm = stable argsort of diag(H), descending; W and H permuted.
//   5. lambda = damp_percent * mean(diag(H)); Cholesky of H + lambda I, of its inverse (upper) -> U.
//      On failure damp_percent += damp_auto_increment while it stays < 1.
//   6. blocks of block_size columns; in a block, for each column p: at a group start (dynamic groups,
//      p % gs == 0) compute (scale, zero) from the group's CURRENT weights; q = quant(w);
//      loss += (w - dq)^2 / U[p,p]^2 / 2; err = (w - dq) / U[p,p]; w[p+1:block end] -= err U[p, p+1:].
//      After the block, W[:, block end:] -= Err U[block, block end:] (one GEMM).
// Difference from IST-DASLab/AutoGPTQ: for group_size < block_size a group starting inside a block
// is scaled from weights that already carry the updates of the earlier columns of the block (the
// references read a stale copy). This makes the result independent of block_size and equal to the
// unblocked algorithm; for group_size >= block_size (128 with the default) and -1 it is identical.
//
// Shapes not multiple of the packing period: the solver accepts any K and N (the last group may be
// short); packing needs K % 32 == 0 for 3 bits, K % (32/bits) == 0 otherwise, and the same of N for
// qzeros; quantize_weight refuses other shapes with a message naming the layer.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <string>

#include "gptq/config.h"
#include "gptq/format.h"

namespace gptq {

// Running Hessian of one layer's inputs, H = (2/n) sum_t x_t x_t^T in fp32 on `device`, n = tokens
// counted (each token weighs the same, whatever its sequence length).
class HessianAccumulator {
 public:
  // Without `device`, the Hessian is allocated on the device of the first batch.
  HessianAccumulator(int64_t in_features, c10::optional<at::Device> device = c10::nullopt, std::string name = "");
  // x [..., in_features] in any float dtype; mask [...] (x's leading shape) of 0/1 or bool selects
  // the tokens counted (padding = 0). Errors on NaN/Inf naming the layer.
  void add_batch(const at::Tensor& x, const c10::optional<at::Tensor>& mask = c10::nullopt);
  // fp32 [K, K]; zeros on the CPU before any batch when no device was given.
  at::Tensor hessian() const;
  int64_t nsamples() const { return nsamples_; }
  int64_t in_features() const { return in_features_; }
  void reset();

 private:
  int64_t in_features_;
  std::string name_;
  at::Tensor hessian_;
  int64_t nsamples_ = 0;
};

// The quantized layer before packing; tensors on the weight's device.
struct QuantizeResult {
  at::Tensor codes;   // uint8 [N, K], codes in [0, 2^bits), original column order
  at::Tensor scales;  // float32 [G, N]
  at::Tensor zeros;   // int32 [G, N], true zero points (not minus one)
  at::Tensor g_idx;   // int32 [K], group of each input channel
  at::Tensor perm;    // int64 [K] column order used (desc_act), else undefined
  double loss = 0.0;  // sum over rows and columns of (w - dq)^2 / U[p,p]^2 / 2 (the references' "error")
  double damp_percent = 0.0;  // damping finally used
  double seconds = 0.0;
  int64_t bits = 4;
  int64_t group_size = -1;
};

// GPTQ solve of weight [N, K] (any float dtype) with Hessian [K, K]. Arithmetic is float64 when the
// Hessian is float64, else float32 (TF32 off). `name` names the layer in errors.
QuantizeResult gptq_quantize(const at::Tensor& weight, const at::Tensor& hessian, const QuantizeConfig& config,
                             const std::string& name = "");

// Round-to-nearest on the same grid (group parameters from the original weights, no act-order).
QuantizeResult rtn_quantize(const at::Tensor& weight, const QuantizeConfig& config, const std::string& name = "");

// Float weight [N, K] (float32) that the result represents: scales[g, n] * (codes[n, k] - zeros[g, n]).
at::Tensor dequantize_result(const QuantizeResult& result);

struct PackedWeight {
  at::Tensor qweight;  // int32 [K*bits/32, N]
  at::Tensor qzeros;   // int32 [G, N*bits/32], stored as the checkpoint format says
  at::Tensor scales;   // float16 [G, N]
  at::Tensor g_idx;    // int32 [K]
};

// Packs a result into checkpoint format `format` (on the result's device). `name` names the layer.
PackedWeight pack_result(const QuantizeResult& result, CheckpointFormat format, const std::string& name = "");

// Packs codes [N, K] (uint8, weight layout) straight into qweight [K*bits/32, N] without a transpose
// copy: the fast path of pack_result (an 8192 x 28672 layer packs in well under a second on 2 cores).
at::Tensor pack_codes_nk(const at::Tensor& codes_nk, int64_t bits);

}  // namespace gptq
