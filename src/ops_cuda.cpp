// CUDA implementations of the gptq ops, registered with the dispatcher. Built only with the kernels.
// The packing ops have no kernel of their own: they run on the CPU (packing happens once, when a
// checkpoint is written) and move the result back.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "format_internal.h"
#include "kernels/dequant/dequant_torch.h"

namespace gptq::detail {
namespace {

template <at::Tensor (*Fn)(const at::Tensor&, int64_t)>
at::Tensor via_cpu(const at::Tensor& t, int64_t bits) {
  return Fn(t.cpu(), bits).to(t.device());
}

}  // namespace
}  // namespace gptq::detail

TORCH_LIBRARY_IMPL(gptq, CUDA, m) {
  using namespace gptq::detail;
  m.impl("pack_rows", &via_cpu<pack_rows_cpu>);
  m.impl("unpack_rows", &via_cpu<unpack_rows_cpu>);
  m.impl("pack_cols", &via_cpu<pack_cols_cpu>);
  m.impl("unpack_cols", &via_cpu<unpack_cols_cpu>);
  m.impl("dequantize", &gptq::cuda::dequantize_cuda);
}
