// The GEMM ops over GPTQ-packed weights: schemas, CPU and Meta implementations, and the C++ entry
// points (include/gptq/kernels.h). CUDA implementations are registered in autogptq_cuda.cpp.
//
//   autogptq_gemm(x, qweight, qzeros, scales, g_idx?, bits, group_size, checkpoint_format)
//   exllamav2_prepare(qweight, g_idx, bits, group_size) -> (qweight_sorted, perm)
//   exllamav2_gemm(x, qweight_sorted, qzeros, scales, perm?, bits, group_size, checkpoint_format)
//   cutlass_prepare(qweight_sorted, qzeros, scales, bits, group_size, checkpoint_format) -> (cutlass_weights, cutlass_zeros)
//   cutlass_gemm(x, qweight_sorted, qzeros, scales, perm?, cutlass_weights, cutlass_zeros, bits, group_size,
//                checkpoint_format)
// The cutlass ops (the "cutlass" backend) have CUDA kernels only, in builds with CUTLASS's GEMM on Hopper.
//
// On the CPU a GEMM is, for M <= 16, a fused GEMV over column strips (W never materialized), else
// dequantize + matmul, both in fp32 (the reference semantics every kernel matches).
// The exllamav2 ops are composites of other ops (gather + autogptq_gemm; unpack, sort, pack), so
// they run on every device and trace as single nodes under torch.compile.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "autogptq_internal.h"
#include "check.h"
#include "gptq/kernels.h"

namespace gptq {
namespace detail {

PackedLayerShape check_gemm_args(const char* op, const at::Tensor& x, const at::Tensor& qweight,
                                 const at::Tensor& qzeros, const at::Tensor& scales,
                                 const c10::optional<at::Tensor>& g_idx, int64_t bits, int64_t group_size,
                                 int64_t checkpoint_format) {
  // g_idx's values are not range-checked here: that needs a device->host copy on every call, which
  // would also make the op unusable under CUDA graph capture. QuantLinear checks them once at
  // post_init; the CPU path checks them in dequantize.
  const auto s = check_packed_layer(op, qweight, qzeros, scales, c10::nullopt, bits, group_size, checkpoint_format);
  if (g_idx.has_value() && g_idx->defined()) {
    const auto& gi = *g_idx;
    GPTQ_CHECK(gi.scalar_type() == at::kInt, op, "g_idx must be int32, got ", gi.scalar_type());
    GPTQ_CHECK(gi.dim() == 1 && gi.size(0) == s.K, op, "g_idx must have shape [K] = [", s.K, "], got ", gi.sizes());
    GPTQ_CHECK(gi.device() == qweight.device(), op, "g_idx is on ", gi.device(), " but qweight on ", qweight.device());
  }
  GPTQ_CHECK(x.dim() == 2, op, "x must be 2-D [M, K], got shape ", x.sizes());
  GPTQ_CHECK(x.size(1) == s.K, op, "x has ", x.size(1), " features but the layer has K = ", s.K);
  GPTQ_CHECK(x.scalar_type() == scales.scalar_type(), op, "x must have the scales' dtype ", scales.scalar_type(),
             ", got ", x.scalar_type());
  GPTQ_CHECK(x.device() == qweight.device(), op, "x is on ", x.device(), " but qweight on ", qweight.device());
  return s;
}

namespace {

// Rows of x up to which the CPU runs the fused GEMV below; above, dequantize + one BLAS GEMM wins.
constexpr int64_t kCpuGemvMaxRows = 16;

// Small M on the CPU: y = x W^T without materializing W. Columns are cut into strips of 256 (so a
// strip's dequantized row, its accumulators [M, 256] and its scales stay in L1/L2) handed to the
// threads; per input channel k a strip decodes its row of W^T once, w[n] = s[g, n] (q[k, n] - z[g, n])
// in fp32, then adds x[m, k] w[n] for every row m. The inner loops run along N, contiguous in the
// packed words, so the compiler vectorizes them. Reads the packed weights once instead of writing and
// reading the fp32 W^T (8x the 4-bit bytes) and its transpose.
at::Tensor gemv_cpu(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& qzeros, const at::Tensor& scales,
                    const c10::optional<at::Tensor>& g_idx, int64_t bits, int64_t group_size, int64_t checkpoint_format,
                    int64_t K, int64_t N) {
  const int64_t M = x.size(0);
  auto xf = x.to(at::kFloat).contiguous();
  auto zf = unpacked_zeros(qzeros, bits, checkpoint_format).to(at::kFloat).contiguous();  // [G, N]
  auto sf = scales.to(at::kFloat).contiguous();                                            // [G, N]
  auto qw = qweight.contiguous();
  const std::vector<int32_t> groups = channel_groups(g_idx, K, group_size);
  auto out = at::empty({M, N}, x.options().dtype(at::kFloat));
  const uint32_t* packed = reinterpret_cast<const uint32_t*>(qw.const_data_ptr<int32_t>());
  const float* xp = xf.const_data_ptr<float>();
  const float* zp = zf.const_data_ptr<float>();
  const float* sp = sf.const_data_ptr<float>();
  float* op = out.data_ptr<float>();
  constexpr int64_t kStrip = 256;
  at::parallel_for(0, (N + kStrip - 1) / kStrip, 1, [&](int64_t c0, int64_t c1) {
    std::vector<float> acc(M * kStrip), w(kStrip);
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t n0 = c * kStrip, nn = std::min(kStrip, N - n0);
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t k = 0; k < K; ++k) {
        decode_row(packed, N, bits, k, n0, nn, zp + groups[k] * N + n0, sp + groups[k] * N + n0, w.data());
        for (int64_t m = 0; m < M; ++m) {
          const float xv = xp[m * K + k];
          float* a = acc.data() + m * kStrip;
          for (int64_t n = 0; n < nn; ++n) a[n] += xv * w[n];
        }
      }
      for (int64_t m = 0; m < M; ++m) std::copy(acc.data() + m * kStrip, acc.data() + m * kStrip + nn, op + m * N + n0);
    }
  });
  return out.to(x.scalar_type());
}

at::Tensor autogptq_gemm_cpu(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& qzeros,
                             const at::Tensor& scales, const c10::optional<at::Tensor>& g_idx, int64_t bits,
                             int64_t group_size, int64_t checkpoint_format) {
  const auto s =
      check_gemm_args("gptq::autogptq_gemm", x, qweight, qzeros, scales, g_idx, bits, group_size, checkpoint_format);
  if (x.size(0) <= kCpuGemvMaxRows) {
    return gemv_cpu(x, qweight, qzeros, scales, g_idx, bits, group_size, checkpoint_format, s.K, s.N);
  }
  // W in fp32 straight from the codes (no rounding to fp16 in between), then one fp32 GEMM.
  auto w = dequantize_cpu(qweight, qzeros, scales.to(at::kFloat), g_idx, bits, group_size, checkpoint_format);
  return at::matmul(x.to(at::kFloat), w.t()).to(x.scalar_type());
}

at::Tensor autogptq_gemm_meta(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& qzeros,
                              const at::Tensor& scales, const c10::optional<at::Tensor>& g_idx, int64_t bits,
                              int64_t group_size, int64_t checkpoint_format) {
  const auto s =
      check_gemm_args("gptq::autogptq_gemm", x, qweight, qzeros, scales, g_idx, bits, group_size, checkpoint_format);
  return at::empty({x.size(0), s.N}, x.options());
}

std::tuple<at::Tensor, at::Tensor> exllamav2_prepare_impl(const at::Tensor& qweight, const at::Tensor& g_idx,
                                                          int64_t bits, int64_t group_size) {
  const char* op = "gptq::exllamav2_prepare";
  check_bits(op, bits);
  GPTQ_CHECK(qweight.scalar_type() == at::kInt && qweight.dim() == 2, op,
             "qweight must be a 2-D int32 tensor, got ", qweight.scalar_type(), " ", qweight.sizes());
  const int64_t K = qweight.size(0) * 32 / bits;
  GPTQ_CHECK(g_idx.scalar_type() == at::kInt && g_idx.dim() == 1 && g_idx.size(0) == K, op,
             "g_idx must be int32 of shape [K] = [", K, "], got ", g_idx.scalar_type(), " ", g_idx.sizes());
  GPTQ_CHECK(group_size == -1 || group_size > 0, op, "group_size must be -1 or positive, got ", group_size);
  // A stable sort keeps channels of one group in their original order.
  auto perm = std::get<1>(at::sort(g_idx.to(at::kLong), /*stable=*/true, /*dim=*/0, /*descending=*/false));
  if (!g_idx.is_meta() && K > 0) {
    auto sorted = g_idx.to(at::kLong).index_select(0, perm);
    auto expected = group_size == -1 ? at::zeros_like(sorted) : at::arange(K, sorted.options()).div(group_size, "floor");
    GPTQ_CHECK(at::equal(sorted, expected), op, "after sorting, g_idx must give every group exactly group_size = ",
               group_size, " channels (the last may be shorter); this g_idx does not, so use the autogptq kernel, "
               "which reads any g_idx");
  }
  auto codes = gptq::unpack_rows(qweight, bits);
  auto sorted_q = gptq::pack_rows(codes.index_select(0, perm), bits);
  return {sorted_q, perm.to(at::kInt)};
}

at::Tensor exllamav2_gemm_impl(const at::Tensor& x, const at::Tensor& qweight_sorted, const at::Tensor& qzeros,
                               const at::Tensor& scales, const c10::optional<at::Tensor>& perm, int64_t bits,
                               int64_t group_size, int64_t checkpoint_format) {
  const char* op = "gptq::exllamav2_gemm";
  GPTQ_CHECK(x.dim() == 2, op, "x must be 2-D [M, K], got shape ", x.sizes());
  at::Tensor xp = x;
  if (perm.has_value() && perm->defined()) {
    GPTQ_CHECK(perm->dim() == 1 && perm->size(0) == x.size(1), op, "perm must have shape [K] = [", x.size(1),
               "], got ", perm->sizes());
    xp = x.index_select(1, *perm);
  }
  return gptq::autogptq_gemm(xp, qweight_sorted, qzeros, scales, c10::nullopt, bits, group_size,
                             static_cast<CheckpointFormat>(checkpoint_format));
}

std::tuple<at::Tensor, at::Tensor> cutlass_prepare_meta(const at::Tensor& qweight_sorted, const at::Tensor& qzeros,
                                                        const at::Tensor& scales, int64_t bits, int64_t group_size,
                                                        int64_t checkpoint_format) {
  const auto s = check_packed_layer("gptq::cutlass_prepare", qweight_sorted, qzeros, scales, c10::nullopt, bits,
                                    group_size, checkpoint_format);
  return {at::empty({s.N * s.K / 8}, qweight_sorted.options()), at::empty({s.groups, s.N}, scales.options())};
}

at::Tensor cutlass_gemm_meta(const at::Tensor& x, const at::Tensor& qweight_sorted, const at::Tensor& qzeros,
                             const at::Tensor& scales, const c10::optional<at::Tensor>& perm, const at::Tensor&,
                             const at::Tensor&, int64_t bits, int64_t group_size, int64_t checkpoint_format) {
  const auto s = check_gemm_args("gptq::cutlass_gemm", x, qweight_sorted, qzeros, scales, c10::nullopt, bits,
                                 group_size, checkpoint_format);
  return at::empty({x.size(0), s.N}, x.options());
}

template <typename Sig>
c10::TypedOperatorHandle<Sig> op_handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

}  // namespace
}  // namespace detail

at::Tensor autogptq_gemm(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& qzeros,
                         const at::Tensor& scales, const c10::optional<at::Tensor>& g_idx, int64_t bits,
                         int64_t group_size, CheckpointFormat format) {
  static auto op = detail::op_handle<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                const at::Tensor&, const c10::optional<at::Tensor>&, int64_t,
                                                int64_t, int64_t)>("gptq::autogptq_gemm");
  return op.call(x, qweight, qzeros, scales, g_idx, bits, group_size, static_cast<int64_t>(format));
}

std::tuple<at::Tensor, at::Tensor> exllamav2_prepare(const at::Tensor& qweight, const at::Tensor& g_idx,
                                                     int64_t bits, int64_t group_size) {
  static auto op = detail::op_handle<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                        int64_t, int64_t)>("gptq::exllamav2_prepare");
  return op.call(qweight, g_idx, bits, group_size);
}

at::Tensor exllamav2_gemm(const at::Tensor& x, const at::Tensor& qweight_sorted, const at::Tensor& qzeros,
                          const at::Tensor& scales, const c10::optional<at::Tensor>& perm, int64_t bits,
                          int64_t group_size, CheckpointFormat format) {
  static auto op = detail::op_handle<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                const at::Tensor&, const c10::optional<at::Tensor>&, int64_t,
                                                int64_t, int64_t)>("gptq::exllamav2_gemm");
  return op.call(x, qweight_sorted, qzeros, scales, perm, bits, group_size, static_cast<int64_t>(format));
}

std::tuple<at::Tensor, at::Tensor> cutlass_prepare(const at::Tensor& qweight_sorted, const at::Tensor& qzeros,
                                                   const at::Tensor& scales, int64_t bits, int64_t group_size,
                                                   CheckpointFormat format) {
  static auto op = detail::op_handle<std::tuple<at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, int64_t, int64_t)>("gptq::cutlass_prepare");
  return op.call(qweight_sorted, qzeros, scales, bits, group_size, static_cast<int64_t>(format));
}

at::Tensor cutlass_gemm(const at::Tensor& x, const at::Tensor& qweight_sorted, const at::Tensor& qzeros,
                        const at::Tensor& scales, const c10::optional<at::Tensor>& perm,
                        const at::Tensor& cutlass_weights, const at::Tensor& cutlass_zeros, int64_t bits,
                        int64_t group_size, CheckpointFormat format) {
  static auto op = detail::op_handle<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                const at::Tensor&, const c10::optional<at::Tensor>&, const at::Tensor&,
                                                const at::Tensor&, int64_t, int64_t, int64_t)>("gptq::cutlass_gemm");
  return op.call(x, qweight_sorted, qzeros, scales, perm, cutlass_weights, cutlass_zeros, bits, group_size,
                 static_cast<int64_t>(format));
}

}  // namespace gptq

TORCH_LIBRARY_FRAGMENT(gptq, m) {
  m.def(
      "autogptq_gemm(Tensor x, Tensor qweight, Tensor qzeros, Tensor scales, Tensor? g_idx, int bits, "
      "int group_size, int checkpoint_format) -> Tensor");
  m.def("exllamav2_prepare(Tensor qweight, Tensor g_idx, int bits, int group_size) -> (Tensor, Tensor)");
  m.def(
      "exllamav2_gemm(Tensor x, Tensor qweight_sorted, Tensor qzeros, Tensor scales, Tensor? perm, int bits, "
      "int group_size, int checkpoint_format) -> Tensor");
  m.def(
      "cutlass_prepare(Tensor qweight_sorted, Tensor qzeros, Tensor scales, int bits, int group_size, "
      "int checkpoint_format) -> (Tensor, Tensor)");
  m.def(
      "cutlass_gemm(Tensor x, Tensor qweight_sorted, Tensor qzeros, Tensor scales, Tensor? perm, "
      "Tensor cutlass_weights, Tensor cutlass_zeros, int bits, int group_size, int checkpoint_format) -> Tensor");
}

TORCH_LIBRARY_IMPL(gptq, CPU, m) { m.impl("autogptq_gemm", &gptq::detail::autogptq_gemm_cpu); }
TORCH_LIBRARY_IMPL(gptq, Meta, m) {
  m.impl("autogptq_gemm", &gptq::detail::autogptq_gemm_meta);
  m.impl("cutlass_prepare", &gptq::detail::cutlass_prepare_meta);
  m.impl("cutlass_gemm", &gptq::detail::cutlass_gemm_meta);
}
TORCH_LIBRARY_IMPL(gptq, CompositeExplicitAutograd, m) {
  m.impl("exllamav2_prepare", &gptq::detail::exllamav2_prepare_impl);
  m.impl("exllamav2_gemm", &gptq::detail::exllamav2_gemm_impl);
}
