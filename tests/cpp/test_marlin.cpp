// Specification of the Marlin GEMM (include/gptq/marlin.h) from C++: the repack's shapes and errors
// on the CPU, and on CUDA the GEMM against a float64 product with the dequantized weight (reference.h,
// plain loops from the format description). The CUDA suite is named MarlinCuda so that the gpu-check
// `sanitize` stage runs it under compute-sanitizer; its sizes stay small for that reason.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <tuple>

#include "gptq/gptq.h"
#include "gptq/marlin.h"
#include "reference.h"

namespace {

using gptq_test::ref_dequantize;
using gptq_test::ref_pack_rows;
using gptq_test::rel_error;

struct Layer {
  at::Tensor qweight, qzeros, scales, g_idx;  // checkpoint format (v1 zeros)
  at::Tensor q, z;                            // true codes [K, N] and zeros [G, N]
};

Layer random_layer(int64_t K, int64_t N, int bits, int64_t group_size, bool act_order, bool symmetric,
                   at::ScalarType dtype) {
  const int64_t gs = group_size == -1 ? K : group_size;
  const int64_t G = (K + gs - 1) / gs;
  Layer l;
  l.q = at::randint(0, 1 << bits, {K, N}, at::kInt);
  l.z = symmetric ? at::full({G, N}, 1 << (bits - 1), at::kInt) : at::randint(0, 1 << bits, {G, N}, at::kInt);
  l.scales = (at::rand({G, N}, at::kFloat) * 0.02 + 0.002).to(dtype);
  l.g_idx = at::arange(K, at::kInt).div(gs, "floor").to(at::kInt);
  if (act_order) l.g_idx = l.g_idx.index_select(0, at::randperm(K, at::kLong));
  l.qweight = ref_pack_rows(l.q, bits);
  l.qzeros = ref_pack_rows(at::remainder(l.z - 1, 1 << bits).t().contiguous(), bits).t().contiguous();
  return l;
}

TEST(MarlinCpu, RepackShapesPaddingAndErrors) {
  at::manual_seed(1);
  auto l = random_layer(200, 72, 4, 32, /*act_order=*/true, /*symmetric=*/false, at::kHalf);
  auto [qw, sc, zp, perm] =
      gptq::marlin_repack(l.qweight, l.qzeros, l.scales, l.g_idx, 4, 32, gptq::CheckpointFormat::kGptq);
  // K_pad = 256, N_pad = 128: qweight [N_pad/64, K_pad*2*bits], 8 group rows of 32.
  EXPECT_EQ(qw.sizes(), (std::vector<int64_t>{2, 256 * 8}));
  EXPECT_EQ(sc.sizes(), (std::vector<int64_t>{8, 128}));
  EXPECT_EQ(zp.sizes(), (std::vector<int64_t>{8, 128}));
  // perm sorts the rows by group.
  EXPECT_TRUE(at::equal(l.g_idx.index_select(0, perm.to(at::kLong)), at::arange(200, at::kInt).div(32, "floor").to(at::kInt)));
  try {
    gptq::marlin_repack(l.qweight, l.qzeros, l.scales, l.g_idx, 3, 32, gptq::CheckpointFormat::kGptq);
    FAIL() << "bits 3 accepted";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("gptq::marlin_repack"), std::string::npos) << e.what();
  }
}

// (bits, group_size, act_order, symmetric, bf16)
class MarlinCuda : public ::testing::TestWithParam<std::tuple<int, int, bool, bool, bool>> {};

TEST_P(MarlinCuda, GemmMatchesFloat64ReferenceForEdgeM) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "needs a CUDA GPU";
  const auto [bits, gs, act_order, symmetric, bf16] = GetParam();
  const auto dtype = bf16 ? at::kBFloat16 : at::kHalf;
  // K = 640: 5 groups of 128; N = 200 pads to 256; 4 column tiles, so K is split over CTAs.
  const int64_t K = 640, N = 200;
  at::manual_seed(100 + bits + gs + 2 * act_order + 4 * symmetric);
  auto l = random_layer(K, N, bits, gs, act_order, symmetric, dtype);
  const auto cuda = at::TensorOptions().device(at::kCUDA);
  auto [qw, sc, zp, perm] = gptq::marlin_repack(l.qweight.cuda(), l.qzeros.cuda(), l.scales.cuda(), l.g_idx.cuda(),
                                                bits, gs, gptq::CheckpointFormat::kGptq);
  auto W = ref_dequantize(l.q, l.z, l.scales, l.g_idx);  // float64 [N, K]
  c10::optional<at::Tensor> zeros = symmetric ? c10::nullopt : c10::optional<at::Tensor>(zp);
  c10::optional<at::Tensor> p = act_order ? c10::optional<at::Tensor>(perm) : c10::nullopt;
  for (int64_t m : {1, 3, 17, 64, 100}) {
    auto x = at::randn({m, K}, at::kFloat).to(dtype);
    auto ref = at::matmul(x.to(at::kDouble), W.t());
    for (auto mode : {gptq::MarlinMode::kFused, gptq::MarlinMode::kDense}) {
      auto y = gptq::marlin_gemm(x.to(cuda.device()), qw, sc, zeros, p, bits, gs, N, mode).cpu();
      ASSERT_EQ(y.sizes(), (std::vector<int64_t>{m, N}));
      // One rounding of each weight to the activation dtype, fp32 sums, one output rounding.
      EXPECT_LT(rel_error(y, ref), bf16 ? 1e-2 : 2e-3)
          << "m " << m << " mode " << static_cast<int>(mode) << " bits " << bits << " gs " << gs;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Configs, MarlinCuda,
                         ::testing::Values(std::make_tuple(4, 128, false, true, false),
                                           std::make_tuple(4, 128, true, false, false),
                                           std::make_tuple(4, -1, false, false, true),
                                           std::make_tuple(4, 32, true, true, true),
                                           std::make_tuple(8, 128, false, false, false),
                                           std::make_tuple(8, 64, true, true, true),
                                           std::make_tuple(8, -1, false, true, false)));

}  // namespace
