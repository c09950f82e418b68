// Hessian accumulation H = (2/n) sum_t x_t x_t^T over the counted tokens of a layer's inputs
// (include/gptq/quantize.h). Each batch updates the running average in place with one GEMM:
//   H <- (n / (n + m)) H + (2 / (n + m)) X^T X,   X [m tokens, K] in fp32 (padded rows zeroed),
// which is the reference's "H *= n/(n+m); X *= sqrt(2/(n+m)); H += X X^T" without scaling X.
// Counting tokens (not sequences) weighs every token alike, whatever the length of its sequence.
// Exposed as the op gptq::hessian_add_batch (device-generic: at:: ops only).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "check.h"
#include "gptq/quantize.h"

namespace gptq {
namespace {

std::string layer_label(const std::string& name) { return name.empty() ? std::string() : " (layer '" + name + "')"; }

// Returns the new token count.
int64_t hessian_add_batch_impl(const at::Tensor& hessian, const at::Tensor& x, const c10::optional<at::Tensor>& mask,
                               int64_t nsamples, c10::string_view name_view) {
  const char* op = "gptq::hessian_add_batch";
  const std::string name(name_view);
  GPTQ_CHECK(hessian.dim() == 2 && hessian.size(0) == hessian.size(1) && hessian.scalar_type() == at::kFloat &&
                 hessian.is_contiguous(),
             op, "hessian", layer_label(name), " must be a contiguous float32 [K, K] tensor, got ",
             hessian.scalar_type(), " ", hessian.sizes());
  const int64_t K = hessian.size(0);
  GPTQ_CHECK(x.dim() >= 1 && x.size(-1) == K && at::isFloatingType(x.scalar_type()), op, "x", layer_label(name),
             " must be a float tensor [..., in_features = ", K, "], got ", x.scalar_type(), " ", x.sizes());
  GPTQ_CHECK(x.device() == hessian.device(), op, "x", layer_label(name), " is on ", x.device(),
             " but the Hessian on ", hessian.device());
  GPTQ_CHECK(nsamples >= 0, op, "nsamples must be >= 0, got ", nsamples);
  auto X = x.reshape({-1, K}).to(at::kFloat);
  int64_t m = X.size(0);
  if (mask.has_value() && mask->defined()) {
    const auto& mk = *mask;
    GPTQ_CHECK(mk.sizes() == x.sizes().slice(0, x.dim() - 1), op, "mask", layer_label(name),
               " must have x's leading shape ", x.sizes().slice(0, x.dim() - 1), ", got ", mk.sizes());
    GPTQ_CHECK(mk.scalar_type() == at::kBool || at::isIntegralType(mk.scalar_type(), false) ||
                   at::isFloatingType(mk.scalar_type()),
               op, "mask must be bool or 0/1 numbers, got ", mk.scalar_type());
    auto keep = mk.reshape({-1}).to(x.device()) != 0;
    // Zeroed rows add nothing to X^T X; gathering the kept rows would cost a sync and a copy.
    X = X * keep.unsqueeze(1).to(at::kFloat);
    m = keep.sum().item<int64_t>();
  }
  GPTQ_CHECK(at::isfinite(X).all().item<bool>(), op, "x", layer_label(name),
             " contains NaN or Inf; the layer's inputs must be finite to build its Hessian");
  if (m == 0) return nsamples;
  const int64_t n = nsamples + m;
  // fp32 without TF32: the Hessian feeds a Cholesky factorisation.
  const bool tf32 = at::globalContext().allowTF32CuBLAS();
  if (tf32) at::globalContext().setAllowTF32CuBLAS(false);
  const_cast<at::Tensor&>(hessian).addmm_(X.t(), X, static_cast<double>(nsamples) / n, 2.0 / n);
  if (tf32) at::globalContext().setAllowTF32CuBLAS(true);
  return n;
}

}  // namespace

HessianAccumulator::HessianAccumulator(int64_t in_features, c10::optional<at::Device> device, std::string name)
    : in_features_(in_features), name_(std::move(name)) {
  GPTQ_CHECK(in_features > 0, "gptq::HessianAccumulator", "in_features", layer_label(name_), " must be > 0, got ",
             in_features);
  if (device.has_value()) hessian_ = at::zeros({in_features, in_features}, at::TensorOptions().dtype(at::kFloat).device(*device));
}

at::Tensor HessianAccumulator::hessian() const {
  return hessian_.defined() ? hessian_ : at::zeros({in_features_, in_features_}, at::kFloat);
}

void HessianAccumulator::add_batch(const at::Tensor& x, const c10::optional<at::Tensor>& mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("gptq::hessian_add_batch", "")
                       .typed<int64_t(const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&, int64_t,
                                      c10::string_view)>();
  // Without a device given at construction, the Hessian lives where the first batch does.
  if (!hessian_.defined()) hessian_ = at::zeros({in_features_, in_features_}, x.options().dtype(at::kFloat));
  nsamples_ = op.call(hessian_, x.device() == hessian_.device() ? x : x.to(hessian_.device()), mask, nsamples_, name_);
}

void HessianAccumulator::reset() {
  if (hessian_.defined()) hessian_.zero_();
  nsamples_ = 0;
}

}  // namespace gptq

TORCH_LIBRARY_FRAGMENT(gptq, m) {
  m.def("hessian_add_batch(Tensor(a!) hessian, Tensor x, Tensor? mask, int nsamples, str name) -> int");
}

TORCH_LIBRARY_IMPL(gptq, CompositeExplicitAutograd, m) { m.impl("hessian_add_batch", &gptq::hessian_add_batch_impl); }
