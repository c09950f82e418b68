// Specification of gptq::QuantLinear (include/gptq/quant_linear.h): forward equals x W^T + b with W the
// float64 reference dequantization; the kernel choice follows the device and act-order; an explicit
// kernel that cannot run is refused with the reason.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <memory>

#include "gptq/gptq.h"
#include "reference.h"

namespace {

using gptq_test::ref_dequantize;
using gptq_test::ref_pack_rows;
using gptq_test::rel_error;

struct Packed {
  at::Tensor qweight, qzeros, scales, g_idx, bias, W;
};

Packed make(int bits, int64_t K, int64_t N, int64_t g, bool act_order, at::ScalarType dtype) {
  at::manual_seed(42 + bits);
  const int64_t G = (K + g - 1) / g;
  auto q = at::randint(0, 1 << bits, {K, N}, at::kInt);
  auto z = at::randint(0, 1 << bits, {G, N}, at::kInt);
  auto s = (at::rand({G, N}, at::kFloat) * 0.02 + 1e-3).to(dtype);
  auto gi = at::arange(K, at::kInt).div(g, "floor");
  if (act_order) gi = gi.index_select(0, at::randperm(K, at::kLong));
  return {ref_pack_rows(q, bits), ref_pack_rows(at::remainder(z - 1, 1 << bits).t(), bits).t().contiguous(), s, gi,
          at::randn({N}, at::kFloat).to(dtype), ref_dequantize(q, z, s, gi)};
}

TEST(QuantLinear, CpuForwardMatchesFloat64AndKeepsLeadingDims) {
  auto p = make(3, 256, 64, 64, true, at::kFloat);
  gptq::QuantLinear layer(p.qweight, p.qzeros, p.scales, p.g_idx, p.bias, 3, 64);
  EXPECT_EQ(layer.kernel(), gptq::QuantKernel::kAutogptq);  // auto on the CPU: the fused CPU GEMV
  EXPECT_EQ(layer.in_features(), 256);
  auto x = at::randn({2, 5, 256}, at::kFloat);
  auto y = layer.forward(x);
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{2, 5, 64}));
  auto ref = at::matmul(x.to(at::kDouble), p.W.t()) + p.bias.to(at::kDouble);
  EXPECT_LT(rel_error(y, ref), 1e-5);  // fp32 throughout on the CPU
}

TEST(QuantLinear, ExplicitCudaKernelOnCpuIsRefusedWithReason) {
  auto p = make(4, 128, 32, 32, false, at::kFloat);
  try {
    gptq::QuantLinear layer(p.qweight, p.qzeros, p.scales, p.g_idx, c10::nullopt, 4, 32,
                            gptq::CheckpointFormat::kGptq, gptq::parse_quant_kernel("exllama"));
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("kernel \"exllamav2\" cannot run"), std::string::npos) << what;
    EXPECT_NE(what.find("needs a CUDA device"), std::string::npos) << what;
  }
  EXPECT_EQ(gptq::parse_quant_kernel("cutlass"), gptq::QuantKernel::kCutlass);
  EXPECT_EQ(gptq::to_string(gptq::QuantKernel::kCutlass), "cutlass");
  EXPECT_THROW(gptq::parse_quant_kernel("no-such-kernel"), c10::Error);
}

TEST(QuantLinearCuda, AutoChoosesExllamav2AndMatchesFloat64) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA GPU";
  for (bool act_order : {false, true}) {
    auto p = make(4, 512, 256, 128, act_order, at::kHalf);
    gptq::QuantLinear layer(p.qweight.cuda(), p.qzeros.cuda(), p.scales.cuda(), p.g_idx.cuda(), p.bias.cuda(), 4,
                            128);
    EXPECT_EQ(layer.kernel(), gptq::QuantKernel::kExllamav2);
    for (int64_t m : {1, 3, 17}) {
      auto x = at::randn({m, 512}, at::kFloat).to(at::kHalf);
      auto y = layer.forward(x.cuda());
      auto ref = at::matmul(x.to(at::kDouble), p.W.t()) + p.bias.to(at::kDouble);
      EXPECT_LT(rel_error(y, ref), 2e-3) << "act_order " << act_order << " m " << m;
    }
  }
}

// The cutlass kernel: m = 1 runs exllamav2's kernels, m = 300 CUTLASS's GEMM on the copy made at construction
// (10240 features make 80 x 2 of its tiles); where the GPU or build has no such GEMM, the constructor refuses
// it with the reason.
TEST(QuantLinearCuda, CutlassMatchesFloat64OrIsRefusedWithReason) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA GPU";
  for (bool act_order : {false, true}) {
    auto p = make(4, 1024, 10240, 128, act_order, at::kHalf);
    std::unique_ptr<gptq::QuantLinear> layer;
    try {
      layer = std::make_unique<gptq::QuantLinear>(p.qweight.cuda(), p.qzeros.cuda(), p.scales.cuda(), p.g_idx.cuda(),
                                                  p.bias.cuda(), 4, 128, gptq::CheckpointFormat::kGptq,
                                                  gptq::QuantKernel::kCutlass);
    } catch (const c10::Error& e) {
      const std::string what = e.what();
      EXPECT_TRUE(what.find("compute capability 9.0") != std::string::npos ||
                  what.find("no CUTLASS GEMM") != std::string::npos)
          << what;
      GTEST_SKIP() << "refused here: " << what;
    }
    EXPECT_EQ(layer->kernel(), gptq::QuantKernel::kCutlass);
    for (int64_t m : {1, 300}) {
      auto x = at::randn({m, 1024}, at::kFloat).to(at::kHalf);
      auto y = layer->forward(x.cuda());
      auto ref = at::matmul(x.to(at::kDouble), p.W.t()) + p.bias.to(at::kDouble);
      EXPECT_LT(rel_error(y, ref), 2e-3) << "act_order " << act_order << " m " << m;
    }
  }
}

}  // namespace
