// The GPTQ solver (include/gptq/quantize.h): device-generic driver on at:: ops, and the CPU
// implementation of its inner step, the op gptq::solve_block (the CUDA one is in
// csrc/kernels/gptq_solver, registered by src/solver_cuda.cpp).
//
// gptq::solve_block quantizes columns [i1, i2) of the working weight W [N, K] (permuted order), one
// column at a time, with U [K, K] the upper Cholesky factor of H^-1:
//   for p in [i1, i2):
//     dynamic groups and p % group_size == 0: (scale, zero)[p / gs] = grid of W[n, p : p + gs]
//     (s, z) = (scales, zeros)[col_group[p], n]
//     q = code(W[n, p]); dq = s (q - z); e = (W[n, p] - dq) / U[p, p]
//     codes[n, p] = q; err[n, p - i1] = e; loss[n] += (W[n, p] - dq)^2 / U[p, p]^2 / 2
//     W[n, j] -= e * U[p, j] for j in (p, i2)
// Rows are independent, so both implementations parallelise over n. The columns at and after i2
// are left alone: the driver applies the block's errors to them with one GEMM.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <chrono>
#include <limits>
#include <sstream>

#include "check.h"
#include "gptq/quantize.h"
#include "kernels/gptq_solver/quant_grid.h"
#include "solver_internal.h"

namespace gptq {
namespace detail {

void check_solve_block(const char* op, const at::Tensor& W, const at::Tensor& U, const at::Tensor& codes,
                       const at::Tensor& err, const at::Tensor& loss, const at::Tensor& scales,
                       const at::Tensor& zeros, const at::Tensor& col_group, int64_t i1, int64_t i2, int64_t bits,
                       int64_t group_size, bool dynamic_groups) {
  check_bits(op, bits);
  GPTQ_CHECK(W.dim() == 2 && W.is_contiguous(), op, "W must be a contiguous [N, K] matrix, got ", W.sizes());
  GPTQ_CHECK(W.scalar_type() == at::kFloat || W.scalar_type() == at::kDouble, op,
             "W must be float32 or float64, got ", W.scalar_type());
  const int64_t N = W.size(0), K = W.size(1);
  GPTQ_CHECK(0 <= i1 && i1 < i2 && i2 <= K, op, "block [", i1, ", ", i2, ") must be a non-empty range in [0, ", K,
             "]");
  const auto T = W.scalar_type();
  auto same = [&](const at::Tensor& t, const char* what, at::IntArrayRef shape, at::ScalarType dt) {
    GPTQ_CHECK(t.sizes() == shape && t.scalar_type() == dt && t.is_contiguous() && t.device() == W.device(), op,
               what, " must be a contiguous ", dt, " tensor of shape ", shape, " on ", W.device(), ", got ",
               t.scalar_type(), " ", t.sizes(), " on ", t.device());
  };
  same(U, "U", {K, K}, T);
  same(codes, "codes", {N, K}, at::kByte);
  GPTQ_CHECK(err.dim() == 2 && err.size(0) == N && err.size(1) >= i2 - i1 && err.scalar_type() == T &&
                 err.is_contiguous() && err.device() == W.device(),
             op, "err must be a contiguous ", T, " [N, >= ", i2 - i1, "] tensor on ", W.device(), ", got ",
             err.scalar_type(), " ", err.sizes());
  same(loss, "loss", {N}, T);
  GPTQ_CHECK(scales.dim() == 2 && scales.size(1) == N, op, "scales must be [G, N = ", N, "], got ", scales.sizes());
  same(scales, "scales", {scales.size(0), N}, T);
  same(zeros, "zeros", {scales.size(0), N}, T);
  same(col_group, "col_group", {K}, at::kInt);
  GPTQ_CHECK(!dynamic_groups || group_size > 0, op, "dynamic groups need group_size > 0, got ", group_size);
}

namespace {

template <typename T>
void solve_block_rows(T* W, const T* U, uint8_t* codes, T* err, int64_t err_ld, T* loss, T* scales, T* zeros,
                      const int32_t* col_group, int64_t N, int64_t K, int64_t i1, int64_t i2, int maxq, bool sym,
                      int64_t gs, bool dynamic, double mse) {
  const T norm = static_cast<T>(mse);
  // ~64K multiply-adds per task: a small layer runs on one thread instead of paying the thread
  // pool's wake-up for microseconds of work.
  const int64_t B = i2 - i1;
  const int64_t grain = std::max<int64_t>(1, 65536 / (B * B / 2 + B));
  at::parallel_for(0, N, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t n = r0; n < r1; ++n) {
      T* w = W + n * K;
      T l = 0;
      for (int64_t p = i1; p < i2; ++p) {
        const int64_t g = col_group[p];
        if (dynamic && p % gs == 0) {
          // The group's current weights: in-block columns were updated in place; a group reaching
          // past i2 starts at a block start (gs > block size, both powers of two), where the lazy
          // updates of all earlier blocks have been applied.
          const int64_t e = std::min(p + gs, K);
          T lo = w[p], hi = w[p];
          for (int64_t j = p + 1; j < e; ++j) {
            lo = std::min(lo, w[j]);
            hi = std::max(hi, w[j]);
          }
          auto prm = grid::minmax_params<T>(lo, hi, maxq, sym);
          if (mse > 0) {
            grid::adjusted_range(lo, hi, sym);
            T best = std::numeric_limits<T>::infinity();
            for (int i = 0; i < grid::kMseCandidates; ++i) {
              const auto c = grid::shrunk_params<T>(lo, hi, i, maxq, sym);
              T cost = 0;
              for (int64_t j = p; j < e; ++j) cost += grid::clip_cost<T>(w[j], c, maxq, norm);
              if (cost < best) {
                best = cost;
                prm = c;
              }
            }
          }
          scales[g * N + n] = prm.scale;
          zeros[g * N + n] = prm.zero;
        }
        const T s = scales[g * N + n], z = zeros[g * N + n];
        const T x = w[p];
        const T q = grid::code<T>(x, s, z, maxq);
        const T r = x - grid::dequant<T>(q, s, z);
        const T d = U[p * K + p];
        const T e = r / d;
        l += r * r / (d * d);
        codes[n * K + p] = static_cast<uint8_t>(q);
        err[n * err_ld + (p - i1)] = e;
        const T* u = U + p * K;
        for (int64_t j = p + 1; j < i2; ++j) w[j] -= e * u[j];
      }
      loss[n] += l / 2;
    }
  });
}

}  // namespace

void solve_block_cpu(const at::Tensor& W, const at::Tensor& U, const at::Tensor& codes, const at::Tensor& err,
                     const at::Tensor& loss, const at::Tensor& scales, const at::Tensor& zeros,
                     const at::Tensor& col_group, int64_t i1, int64_t i2, int64_t bits, bool sym, int64_t group_size,
                     bool dynamic_groups, double mse) {
  const char* op = "gptq::solve_block";
  check_solve_block(op, W, U, codes, err, loss, scales, zeros, col_group, i1, i2, bits, group_size, dynamic_groups);
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "solve_block", [&] {
    solve_block_rows<scalar_t>(W.data_ptr<scalar_t>(), U.const_data_ptr<scalar_t>(), codes.data_ptr<uint8_t>(),
                               err.data_ptr<scalar_t>(), err.size(1), loss.data_ptr<scalar_t>(),
                               scales.data_ptr<scalar_t>(), zeros.data_ptr<scalar_t>(),
                               col_group.const_data_ptr<int32_t>(), W.size(0), W.size(1), i1, i2,
                               static_cast<int>((1 << bits) - 1), sym, group_size, dynamic_groups, mse);
  });
}

}  // namespace detail

namespace {

std::string layer_label(const std::string& name) { return name.empty() ? std::string() : " (layer '" + name + "')"; }

// TF32 would round the GEMM inputs to 10 mantissa bits; GPTQ's reference runs in true fp32.
struct NoTF32Guard {
  bool was;
  NoTF32Guard() : was(at::globalContext().allowTF32CuBLAS()) {
    if (was) at::globalContext().setAllowTF32CuBLAS(false);
  }
  ~NoTF32Guard() {
    if (was) at::globalContext().setAllowTF32CuBLAS(true);
  }
};

// Grid parameters of every row of x [N, m] (the same math as grid::*, on tensors): scale, zero [N].
std::pair<at::Tensor, at::Tensor> grid_params(const at::Tensor& x, int64_t maxq, bool sym, double mse) {
  auto xmin = at::clamp_max(x.amin(1), 0);
  auto xmax = at::clamp_min(x.amax(1), 0);
  if (sym) {
    xmax = at::maximum(xmin.abs(), xmax);
    xmin = at::where(xmin < 0, -xmax, xmin);
  }
  auto both0 = (xmin == 0).logical_and_(xmax == 0);
  xmin = at::where(both0, at::full({}, -1.0, x.options()), xmin);
  xmax = at::where(both0, at::full({}, 1.0, x.options()), xmax);
  auto params = [&](const at::Tensor& lo, const at::Tensor& hi) {
    auto scale = (hi - lo) / static_cast<double>(maxq);
    auto zero = sym ? at::full_like(scale, static_cast<double>((maxq + 1) / 2)) : at::round(-lo / scale);
    return std::make_pair(scale, zero);
  };
  auto [scale, zero] = params(xmin, xmax);
  if (mse > 0) {
    auto best = at::full_like(scale, std::numeric_limits<double>::infinity());
    for (int i = 0; i < grid::kMseCandidates; ++i) {
      // The shrink factor rounded to the working precision first, as grid::shrunk_params does.
      const double s = x.scalar_type() == at::kFloat ? static_cast<double>(static_cast<float>(1.0 - i / 100.0))
                                                      : 1.0 - i / 100.0;
      auto [sc, ze] = params(xmin * s, xmax * s);
      auto q = at::clamp(at::round(x / sc.unsqueeze(1)) + ze.unsqueeze(1), 0, maxq);
      auto cost = (sc.unsqueeze(1) * (q - ze.unsqueeze(1)) - x).abs_().pow_(mse).sum(1);
      auto better = cost < best;
      best = at::where(better, cost, best);
      scale = at::where(better, sc, scale);
      zero = at::where(better, ze, zero);
    }
  }
  return {scale, zero};
}

void check_finite(const char* op, const at::Tensor& t, const char* what, const std::string& name) {
  GPTQ_CHECK(at::isfinite(t).all().item<bool>(), op, what, layer_label(name),
             " contains NaN or Inf; GPTQ needs finite values (check the layer's weights and calibration inputs)");
}

void solve_block(const at::Tensor& W, const at::Tensor& U, const at::Tensor& codes, const at::Tensor& err,
                 const at::Tensor& loss, const at::Tensor& scales, const at::Tensor& zeros, const at::Tensor& col_group,
                 int64_t i1, int64_t i2, int64_t bits, bool sym, int64_t group_size, bool dynamic_groups, double mse) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("gptq::solve_block", "")
                       .typed<void(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                   const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                                   int64_t, int64_t, bool, int64_t, bool, double)>();
  op.call(W, U, codes, err, loss, scales, zeros, col_group, i1, i2, bits, sym, group_size, dynamic_groups, mse);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

QuantizeResult gptq_quantize(const at::Tensor& weight, const at::Tensor& hessian, const QuantizeConfig& config,
                             const std::string& name) {
  const char* op = "gptq::quantize_weight";
  config.validate();
  const auto t0 = std::chrono::steady_clock::now();
  GPTQ_CHECK(weight.dim() == 2 && at::isFloatingType(weight.scalar_type()), op, "weight", layer_label(name),
             " must be a 2-D float tensor [out_features, in_features], got ", weight.scalar_type(), " ",
             weight.sizes());
  const int64_t N = weight.size(0), K = weight.size(1);
  GPTQ_CHECK(hessian.dim() == 2 && hessian.size(0) == K && hessian.size(1) == K &&
                 at::isFloatingType(hessian.scalar_type()),
             op, "hessian", layer_label(name), " must be a float [in_features, in_features] = [", K, ", ", K,
             "] tensor, got ", hessian.scalar_type(), " ", hessian.sizes());
  GPTQ_CHECK(hessian.device() == weight.device(), op, "hessian", layer_label(name), " is on ", hessian.device(),
             " but weight on ", weight.device());
  GPTQ_CHECK(N > 0 && K > 0, op, "weight", layer_label(name), " is empty: ", weight.sizes());
  NoTF32Guard no_tf32;
  const auto T = hessian.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t bits = config.bits, maxq = config.maxq(), gs = config.group_size;
  const bool grouped = gs != -1;
  at::Tensor W = weight.to(T, /*non_blocking=*/false, /*copy=*/true).contiguous();
  at::Tensor H = hessian.to(T, false, true).contiguous();
  check_finite(op, W, "weight", name);
  check_finite(op, H, "hessian", name);
  const int64_t G = grouped ? (K + gs - 1) / gs : 1;
  auto fopt = W.options();
  auto scales = at::zeros({G, N}, fopt);
  auto zeros = at::zeros({G, N}, fopt);

  // 1. One group per row: the grid of the original row, never revisited.
  if (!grouped) {
    auto [s, z] = grid_params(W, maxq, config.sym, config.mse);
    scales[0].copy_(s);
    zeros[0].copy_(z);
  }
  // 2. Dead inputs never fire: pin their diagonal so H stays invertible, and drop their weights.
  auto dead = H.diagonal() == 0;
  H.diagonal().masked_fill_(dead, 1);
  W.masked_fill_(dead.unsqueeze(0), 0);
  // 3. Static groups: every grid from the original (dead-zeroed) weights, in original order.
  if (grouped && config.static_groups) {
    for (int64_t g = 0; g < G; ++g) {
      auto [s, z] = grid_params(W.slice(1, g * gs, std::min(K, (g + 1) * gs)), maxq, config.sym, config.mse);
      scales[g].copy_(s);
      zeros[g].copy_(z);
    }
  }
  // 4. Act-order: most active inputs first (stable, so ties keep the original order).
  at::Tensor perm;
  if (config.desc_act) {
    perm = std::get<1>(at::sort(H.diagonal(), /*stable=*/true, /*dim=*/0, /*descending=*/true));
    W = W.index_select(1, perm).contiguous();
    H = H.index_select(0, perm).index_select(1, perm).contiguous();
  }
  // Group of each permuted column.
  auto idx = at::arange(K, W.options().dtype(at::kLong));
  at::Tensor col_group;
  if (!grouped) {
    col_group = at::zeros({K}, idx.options());
  } else if (config.static_groups && perm.defined()) {
    col_group = at::div(perm, gs, "floor");
  } else {
    col_group = at::div(idx, gs, "floor");
  }
  col_group = col_group.to(at::kInt).contiguous();
  const bool dynamic = grouped && !config.static_groups;

  // 5. Damping and the upper Cholesky factor of H^-1, with damping raised until it exists.
  double damp = config.damp_percent;
  const auto mean_diag = H.diagonal().mean();
  at::Tensor U;
  while (true) {
    auto Hd = H.clone();
    Hd.diagonal().add_(mean_diag * damp);
    auto [L, info] = at::linalg_cholesky_ex(Hd);
    if (info.item<int64_t>() == 0) {
      auto [Uc, info2] = at::linalg_cholesky_ex(at::cholesky_inverse(L), /*upper=*/true);
      if (info2.item<int64_t>() == 0 && at::isfinite(Uc).all().item<bool>()) {
        U = Uc.contiguous();
        break;
      }
    }
    const double next = damp + config.damp_auto_increment;
    GPTQ_CHECK(config.damp_auto_increment > 0 && next < 1, op, "the Hessian", layer_label(name), " [", K, ", ", K,
               "] is not positive definite even with damp_percent = ", damp, " (started at ", config.damp_percent,
               ", damp_auto_increment = ", config.damp_auto_increment,
               "); the calibration inputs of this layer are degenerate, or raise damp_percent");
    damp = next;
  }

  // 6. Blocks: the column-serial solve inside, one GEMM for the columns after.
  const int64_t B = config.block_size;
  auto codes = at::empty({N, K}, W.options().dtype(at::kByte));
  auto err = at::empty({N, std::min(B, K)}, fopt);
  auto loss = at::zeros({N}, fopt);
  for (int64_t i1 = 0; i1 < K; i1 += B) {
    const int64_t i2 = std::min(i1 + B, K);
    solve_block(W, U, codes, err, loss, scales, zeros, col_group, i1, i2, bits, config.sym, gs, dynamic, config.mse);
    if (i2 < K) {
      // Product then subtraction, as the reference does (not addmm), so both round alike.
      W.slice(1, i2, K).sub_(at::mm(err.slice(1, 0, i2 - i1), U.slice(0, i1, i2).slice(1, i2, K)));
    }
  }

  QuantizeResult r;
  r.bits = bits;
  r.group_size = gs;
  r.damp_percent = damp;
  r.scales = scales.to(at::kFloat);
  r.zeros = zeros.round().to(at::kInt);
  if (perm.defined()) {
    auto invperm = at::argsort(perm);
    r.codes = codes.index_select(1, invperm).contiguous();
    r.g_idx = at::empty({K}, col_group.options()).index_copy_(0, perm, col_group);
    r.perm = perm;
  } else {
    r.codes = codes;
    r.g_idx = col_group;
  }
  r.loss = loss.sum().item<double>();
  r.seconds = seconds_since(t0);
  return r;
}

QuantizeResult rtn_quantize(const at::Tensor& weight, const QuantizeConfig& config, const std::string& name) {
  const char* op = "gptq::rtn_quantize_weight";
  config.validate();
  const auto t0 = std::chrono::steady_clock::now();
  GPTQ_CHECK(weight.dim() == 2 && at::isFloatingType(weight.scalar_type()), op, "weight", layer_label(name),
             " must be a 2-D float tensor [out_features, in_features], got ", weight.scalar_type(), " ",
             weight.sizes());
  const int64_t N = weight.size(0), K = weight.size(1), gs = config.group_size, maxq = config.maxq();
  GPTQ_CHECK(N > 0 && K > 0, op, "weight", layer_label(name), " is empty: ", weight.sizes());
  const auto T = weight.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto W = weight.to(T).contiguous();
  check_finite(op, W, "weight", name);
  const int64_t step = gs == -1 ? K : gs;
  const int64_t G = (K + step - 1) / step;
  auto scales = at::empty({G, N}, W.options());
  auto zeros = at::empty({G, N}, W.options());
  for (int64_t g = 0; g < G; ++g) {
    auto [s, z] = grid_params(W.slice(1, g * step, std::min(K, (g + 1) * step)), maxq, config.sym, config.mse);
    scales[g].copy_(s);
    zeros[g].copy_(z);
  }
  auto g_idx = at::div(at::arange(K, W.options().dtype(at::kLong)), step, "floor");
  auto s_col = scales.index_select(0, g_idx).t();  // [N, K]
  auto z_col = zeros.index_select(0, g_idx).t();
  auto q = at::clamp(at::round(W / s_col) + z_col, 0, maxq);
  QuantizeResult r;
  r.bits = config.bits;
  r.group_size = gs;
  r.codes = q.to(at::kByte).contiguous();
  r.scales = scales.to(at::kFloat);
  r.zeros = zeros.round().to(at::kInt);
  r.g_idx = g_idx.to(at::kInt);
  r.loss = (s_col * (q - z_col) - W).pow(2).sum().item<double>();
  r.damp_percent = 0.0;
  r.seconds = seconds_since(t0);
  return r;
}

at::Tensor dequantize_result(const QuantizeResult& r) {
  auto gi = r.g_idx.to(at::kLong);
  auto s = r.scales.index_select(0, gi).t();  // [N, K]
  auto z = r.zeros.to(at::kFloat).index_select(0, gi).t();
  return s * (r.codes.to(at::kFloat) - z);
}

}  // namespace gptq

TORCH_LIBRARY_FRAGMENT(gptq, m) {
  m.def(
      "solve_block(Tensor(a!) W, Tensor U, Tensor(b!) codes, Tensor(c!) err, Tensor(d!) loss, Tensor(e!) scales, "
      "Tensor(f!) zeros, Tensor col_group, int i1, int i2, int bits, bool sym, int group_size, bool dynamic_groups, "
      "float mse) -> ()");
}

TORCH_LIBRARY_IMPL(gptq, CPU, m) { m.impl("solve_block", &gptq::detail::solve_block_cpu); }
