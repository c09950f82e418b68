// Registration of the gptq operator library: schemas, and the CPU and Meta implementations of the
// format ops. Other op families add their schemas with TORCH_LIBRARY_FRAGMENT(gptq, m) in their own
// files; CUDA implementations are registered in *_cuda.cpp files, built only with the kernels.
//
// Meta implementations compute output shapes and dtypes without data, which is what torch.compile's
// fake tensors and CUDA graph capture need.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "check.h"
#include "format_internal.h"

namespace gptq::detail {
namespace {

at::Tensor pack_rows_meta(const at::Tensor& codes, int64_t bits) {
  check_bits("gptq::pack_rows", bits);
  GPTQ_CHECK(codes.dim() == 2, "gptq::pack_rows", "expects a 2-D tensor, got shape ", codes.sizes());
  return at::empty({codes.size(0) * bits / 32, codes.size(1)}, codes.options().dtype(at::kInt));
}
at::Tensor unpack_rows_meta(const at::Tensor& packed, int64_t bits) {
  check_bits("gptq::unpack_rows", bits);
  GPTQ_CHECK(packed.dim() == 2, "gptq::unpack_rows", "expects a 2-D tensor, got shape ", packed.sizes());
  return at::empty({packed.size(0) * 32 / bits, packed.size(1)}, packed.options().dtype(at::kInt));
}
at::Tensor pack_cols_meta(const at::Tensor& codes, int64_t bits) {
  check_bits("gptq::pack_cols", bits);
  GPTQ_CHECK(codes.dim() == 2, "gptq::pack_cols", "expects a 2-D tensor, got shape ", codes.sizes());
  return at::empty({codes.size(0), codes.size(1) * bits / 32}, codes.options().dtype(at::kInt));
}
at::Tensor unpack_cols_meta(const at::Tensor& packed, int64_t bits) {
  check_bits("gptq::unpack_cols", bits);
  GPTQ_CHECK(packed.dim() == 2, "gptq::unpack_cols", "expects a 2-D tensor, got shape ", packed.sizes());
  return at::empty({packed.size(0), packed.size(1) * 32 / bits}, packed.options().dtype(at::kInt));
}
at::Tensor dequantize_meta(const at::Tensor& qweight, const at::Tensor& qzeros, const at::Tensor& scales,
                           const c10::optional<at::Tensor>& g_idx, int64_t bits, int64_t group_size,
                           int64_t checkpoint_format) {
  const auto s =
      check_packed_layer("gptq::dequantize", qweight, qzeros, scales, g_idx, bits, group_size, checkpoint_format);
  return at::empty({s.N, s.K}, scales.options());
}

}  // namespace
}  // namespace gptq::detail

TORCH_LIBRARY(gptq, m) {
  m.def("pack_rows(Tensor codes, int bits) -> Tensor");
  m.def("unpack_rows(Tensor packed, int bits) -> Tensor");
  m.def("pack_cols(Tensor codes, int bits) -> Tensor");
  m.def("unpack_cols(Tensor packed, int bits) -> Tensor");
  m.def(
      "dequantize(Tensor qweight, Tensor qzeros, Tensor scales, Tensor? g_idx, int bits, int group_size, "
      "int checkpoint_format) -> Tensor");
}

TORCH_LIBRARY_IMPL(gptq, CPU, m) {
  m.impl("pack_rows", &gptq::detail::pack_rows_cpu);
  m.impl("unpack_rows", &gptq::detail::unpack_rows_cpu);
  m.impl("pack_cols", &gptq::detail::pack_cols_cpu);
  m.impl("unpack_cols", &gptq::detail::unpack_cols_cpu);
  m.impl("dequantize", &gptq::detail::dequantize_cpu);
}

TORCH_LIBRARY_IMPL(gptq, Meta, m) {
  m.impl("pack_rows", &gptq::detail::pack_rows_meta);
  m.impl("unpack_rows", &gptq::detail::unpack_rows_meta);
  m.impl("pack_cols", &gptq::detail::pack_cols_meta);
  m.impl("unpack_cols", &gptq::detail::unpack_cols_meta);
  m.impl("dequantize", &gptq::detail::dequantize_meta);
}
