// Schemas and host code of the Marlin GEMM ops (include/gptq/marlin.h): the repack (CPU and CUDA,
// tensor ops only, exact), the Meta implementations (shapes for fake tensors and graph capture) and
// the C++ entry points that go through the dispatcher. The CUDA GEMM is registered in
// src/marlin_cuda.cpp.
#include "gptq/marlin.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <vector>

#include "check.h"
#include "format_internal.h"
#include "marlin_internal.h"

namespace gptq::detail {
namespace {

const char* kRepackOp = "gptq::marlin_repack";
const char* kGemmOp = "gptq::marlin_gemm";

void check_marlin_bits(const char* op, int64_t bits) {
  GPTQ_CHECK(bits == 4 || bits == 8, op, "bits must be 4 or 8 for the Marlin kernel, got ", bits);
}

// For every code of one 16 x 64 slice, in the order of the repacked words (h, lane, w4, then value
// within the word, lowest bits first), its position kl * 64 + nl inside the slice. Lane (g, t) owns
// column 8j + g of sub-tile j and rows 2t, 2t+1, 2t+8, 2t+9 (the m16n8k16 B fragment).
//   4 bits: word w4, nibble p: sub-tile 2*w4 + (p & 1), row 2t + ((p >> 2) & 1) + 8 * ((p >> 1) & 1)
//   8 bits: word 4h + w4 = sub-tile j, byte b: row 2t + (b >> 1) + 8 * (b & 1)
at::Tensor slice_order(int64_t bits) {
  std::vector<int64_t> idx;
  idx.reserve(1024);
  for (int h = 0; h < bits / 4; ++h)
    for (int lane = 0; lane < 32; ++lane) {
      const int g = lane / 4, t = lane % 4;
      for (int w4 = 0; w4 < 4; ++w4) {
        if (bits == 4) {
          for (int p = 0; p < 8; ++p) {
            const int sub = 2 * w4 + (p & 1);
            const int kl = 2 * t + ((p >> 2) & 1) + 8 * ((p >> 1) & 1);
            idx.push_back(kl * 64 + 8 * sub + g);
          }
        } else {
          for (int b = 0; b < 4; ++b) {
            const int j = 4 * h + w4;
            const int kl = 2 * t + (b >> 1) + 8 * (b & 1);
            idx.push_back(kl * 64 + 8 * j + g);
          }
        }
      }
    }
  return at::tensor(idx, at::kLong);
}

// [G, N] -> [G_pad, N_pad] padded with `fill`, then columns permuted within each 64-column tile: position
// g*8 + j takes column 8j + g.
at::Tensor permute_group_rows(const at::Tensor& v, int64_t G_pad, int64_t N_pad, double fill) {
  auto p = at::full({G_pad, N_pad}, fill, v.options());
  p.narrow(0, 0, v.size(0)).narrow(1, 0, v.size(1)).copy_(v);
  return p.view({G_pad, N_pad / 64, 8, 8}).transpose(2, 3).reshape({G_pad, N_pad});
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> marlin_repack_impl(
    const at::Tensor& qweight, const at::Tensor& qzeros, const at::Tensor& scales,
    const c10::optional<at::Tensor>& g_idx, int64_t bits, int64_t group_size, int64_t checkpoint_format) {
  const char* op = kRepackOp;
  const auto s = check_packed_layer(op, qweight, qzeros, scales, g_idx, bits, group_size, checkpoint_format);
  check_marlin_bits(op, bits);
  GPTQ_CHECK(scales.scalar_type() == at::kHalf || scales.scalar_type() == at::kBFloat16, op,
             "scales must be float16 or bfloat16 (the activation dtype of the kernel), got ", scales.scalar_type());
  const int64_t K = s.K, N = s.N;
  const int64_t K_pad = round_up(std::max<int64_t>(K, 1), kMarlinTileK), N_pad = round_up(std::max<int64_t>(N, 1), kMarlinTileN);
  const int64_t rows = marlin_group_rows(group_size, K_pad);
  GPTQ_CHECK(marlin_group_ok(rows), op, "group_size must be -1, 32, 64 or a multiple of 128, got ", group_size);
  const int64_t G_pad = (K_pad + rows - 1) / rows;
  const auto dev = qweight.device();
  const int64_t mask = (int64_t(1) << bits) - 1;

  // Codes [K, N] and true zero points [G, N].
  auto codes = unpack_rows(qweight, bits).to(at::kLong);
  auto zeros = unpack_cols(qzeros, bits).narrow(1, 0, N).to(at::kLong);
  if (checkpoint_format == 1) zeros = at::bitwise_and(zeros + 1, mask);

  // Act-order: sort the rows by group. The kernel reads group k / group_size for sorted row k, so
  // every group must hold exactly group_size rows (what GPTQ's desc_act produces).
  auto perm = at::arange(K, qweight.options().dtype(at::kInt));
  if (g_idx.has_value() && g_idx->defined() && K > 0) {
    const int64_t gs = group_size == -1 ? std::max<int64_t>(K, 1) : group_size;
    auto expected = at::arange(K, g_idx->options().dtype(at::kLong)).div(gs, "floor");
    auto gi = g_idx->to(at::kLong);
    if (!at::equal(gi, expected)) {
      auto order = std::get<1>(at::sort(gi, /*stable=*/true, /*dim=*/0, /*descending=*/false));
      GPTQ_CHECK(at::equal(gi.index_select(0, order), expected), op,
                 "act-order g_idx must put exactly group_size = ", group_size,
                 " input channels in every group (GPTQ desc_act does); this g_idx does not, so the rows "
                 "cannot be sorted into contiguous groups");
      codes = codes.index_select(0, order);
      perm = order.to(at::kInt);
    }
  }

  // Tile layout: [NT, KT, 16 x 64 slice] -> the slice's codes in word order -> words.
  const int64_t NT = N_pad / kMarlinTileN, KT = K_pad / 16;
  auto padded = at::zeros({K_pad, N_pad}, codes.options());
  padded.narrow(0, 0, K).narrow(1, 0, N).copy_(codes);
  auto tiles = padded.view({KT, 16, NT, 64}).permute({2, 0, 1, 3}).reshape({NT, KT, 1024});
  const int64_t per_word = 32 / bits;
  auto ordered = tiles.index_select(2, slice_order(bits).to(dev)).view({NT, KT, 1024 / per_word, per_word});
  auto shifts = (at::arange(per_word, codes.options()) * bits).view({1, 1, 1, per_word});
  auto words = at::bitwise_left_shift(ordered, shifts).sum(3);  // int64 in [0, 2^32)
  words = at::where(words >= (int64_t(1) << 31), words - (int64_t(1) << 32), words).to(at::kInt);
  auto qweight_r = words.reshape({NT, KT * (1024 / per_word)});

  auto scales_r = permute_group_rows(scales, G_pad, N_pad, 0.0);
  // Padding zeros with the symmetric value keeps "every zero is 2^(bits-1)" a test on the whole tensor.
  auto zeros_r = permute_group_rows(zeros.to(scales.scalar_type()), G_pad, N_pad, double(int64_t(1) << (bits - 1)));
  return {qweight_r, scales_r, zeros_r, perm};
}

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> marlin_repack_meta(
    const at::Tensor& qweight, const at::Tensor& qzeros, const at::Tensor& scales,
    const c10::optional<at::Tensor>& g_idx, int64_t bits, int64_t group_size, int64_t checkpoint_format) {
  const char* op = kRepackOp;
  const auto s = check_packed_layer(op, qweight, qzeros, scales, g_idx, bits, group_size, checkpoint_format);
  check_marlin_bits(op, bits);
  const int64_t K_pad = round_up(std::max<int64_t>(s.K, 1), kMarlinTileK);
  const int64_t N_pad = round_up(std::max<int64_t>(s.N, 1), kMarlinTileN);
  const int64_t rows = marlin_group_rows(group_size, K_pad);
  GPTQ_CHECK(marlin_group_ok(rows), op, "group_size must be -1, 32, 64 or a multiple of 128, got ", group_size);
  const int64_t G_pad = (K_pad + rows - 1) / rows;
  return {at::empty({N_pad / kMarlinTileN, K_pad * 2 * bits}, qweight.options()),
          at::empty({G_pad, N_pad}, scales.options()), at::empty({G_pad, N_pad}, scales.options()),
          at::empty({s.K}, qweight.options())};
}

at::Tensor marlin_gemm_meta(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scales,
                            const c10::optional<at::Tensor>& zeros, const c10::optional<at::Tensor>& perm,
                            int64_t bits, int64_t group_size, int64_t size_n, int64_t mode) {
  check_marlin_bits(kGemmOp, bits);
  GPTQ_CHECK(x.dim() >= 1, kGemmOp, "x must have at least one dimension, got shape ", x.sizes());
  GPTQ_CHECK(size_n >= 0, kGemmOp, "size_n must be >= 0, got ", size_n);
  auto shape = x.sizes().vec();
  shape.back() = size_n;
  return at::empty(shape, x.options());
}

}  // namespace
}  // namespace gptq::detail

TORCH_LIBRARY_FRAGMENT(gptq, m) {
  m.def(
      "marlin_repack(Tensor qweight, Tensor qzeros, Tensor scales, Tensor? g_idx, int bits, int group_size, "
      "int checkpoint_format) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "marlin_gemm(Tensor x, Tensor qweight, Tensor scales, Tensor? zeros, Tensor? perm, int bits, int group_size, "
      "int size_n, int mode=0) -> Tensor");
}

TORCH_LIBRARY_IMPL(gptq, CPU, m) { m.impl("marlin_repack", &gptq::detail::marlin_repack_impl); }

TORCH_LIBRARY_IMPL(gptq, Meta, m) {
  m.impl("marlin_repack", &gptq::detail::marlin_repack_meta);
  m.impl("marlin_gemm", &gptq::detail::marlin_gemm_meta);
}

namespace gptq {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> marlin_repack(const at::Tensor& qweight,
                                                                         const at::Tensor& qzeros,
                                                                         const at::Tensor& scales,
                                                                         const c10::optional<at::Tensor>& g_idx,
                                                                         int64_t bits, int64_t group_size,
                                                                         CheckpointFormat format) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("gptq::marlin_repack", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&,
                           int64_t, int64_t, int64_t)>();
  return op.call(qweight, qzeros, scales, g_idx, bits, group_size, static_cast<int64_t>(format));
}

at::Tensor marlin_gemm(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scales,
                       const c10::optional<at::Tensor>& zeros, const c10::optional<at::Tensor>& perm, int64_t bits,
                       int64_t group_size, int64_t size_n, MarlinMode mode) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("gptq::marlin_gemm", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const c10::optional<at::Tensor>&, const c10::optional<at::Tensor>&, int64_t,
                                         int64_t, int64_t, int64_t)>();
  return op.call(x, qweight, scales, zeros, perm, bits, group_size, size_n, static_cast<int64_t>(mode));
}

}  // namespace gptq
