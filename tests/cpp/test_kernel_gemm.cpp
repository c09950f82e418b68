// Specification of the GEMM ops (include/gptq/kernels.h): y = x W^T for a GPTQ-packed W, checked
// against the float64 product with the reference dequantization (reference.h) on random codes,
// zeros and scales.
//
// Tolerances: the CPU path is fp32 throughout (1e-5). The CUDA kernels accumulate in fp32 and round
// y once to fp16 (2^-11) or bf16 (2^-8): 2e-3 and 1e-2. CUDA outputs are poisoned: the caching
// allocator's free memory is filled with NaN before each call, so an unwritten element shows.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <limits>
#include <tuple>

#include "gptq/gptq.h"
#include "reference.h"

namespace {

using gptq_test::ref_dequantize;
using gptq_test::ref_pack_rows;
using gptq_test::rel_error;

struct Layer {
  at::Tensor qweight, qzeros, scales, g_idx, W;  // W: float64 reference [N, K]
};

Layer make_layer(int bits, int64_t K, int64_t N, int64_t g, bool act_order, gptq::CheckpointFormat format,
                 at::ScalarType dtype, uint64_t seed) {
  at::manual_seed(seed);
  const int64_t G = g == -1 ? 1 : (K + g - 1) / g;
  auto q = at::randint(0, 1 << bits, {K, N}, at::kInt);
  auto z = at::randint(0, 1 << bits, {G, N}, at::kInt);
  auto scales = (at::rand({G, N}, at::kFloat) * 0.02 + 1e-3).to(dtype);
  auto g_idx = g == -1 ? at::zeros({K}, at::kInt) : at::arange(K, at::kInt).div(g, "floor");
  if (act_order) g_idx = g_idx.index_select(0, at::randperm(K, at::kLong));
  auto stored_z = format == gptq::CheckpointFormat::kGptq ? at::remainder(z - 1, 1 << bits) : z;
  return {ref_pack_rows(q, bits), ref_pack_rows(stored_z.t(), bits).t().contiguous(), scales, g_idx,
          ref_dequantize(q, z, scales, g_idx)};
}

void poison_cuda_allocator() {
  auto junk = at::full({1 << 24}, std::numeric_limits<float>::quiet_NaN(), at::device(at::kCUDA).dtype(at::kFloat));
}

TEST(GemmCpu, AutogptqMatchesFloat64ForEveryWidthWithAndWithoutActOrder) {
  for (int bits : {2, 3, 4, 8}) {
    for (bool act_order : {false, true}) {
      auto L = make_layer(bits, 256, 64, 32, act_order, gptq::CheckpointFormat::kGptq, at::kFloat, bits);
      auto x = at::randn({3, 256}, at::kFloat);
      auto y = gptq::autogptq_gemm(x, L.qweight, L.qzeros, L.scales, L.g_idx, bits, 32, gptq::CheckpointFormat::kGptq);
      EXPECT_LT(rel_error(y, at::matmul(x.to(at::kDouble), L.W.t())), 1e-5) << bits << " " << act_order;
    }
  }
}

TEST(GemmCpu, Exllamav2SortedRowsAndGatheredColumnsGiveTheSameProduct) {
  auto L = make_layer(4, 512, 32, 128, true, gptq::CheckpointFormat::kGptqV2, at::kFloat, 11);
  auto [qs, perm] = gptq::exllamav2_prepare(L.qweight, L.g_idx, 4, 128);
  auto x = at::randn({2, 512}, at::kFloat);
  auto y = gptq::exllamav2_gemm(x, qs, L.qzeros, L.scales, perm, 4, 128, gptq::CheckpointFormat::kGptqV2);
  EXPECT_LT(rel_error(y, at::matmul(x.to(at::kDouble), L.W.t())), 1e-5);
}

TEST(GemmCpu, BadInputNamesOpAndRule) {
  auto L = make_layer(4, 128, 32, 32, false, gptq::CheckpointFormat::kGptq, at::kFloat, 1);
  try {
    gptq::autogptq_gemm(at::randn({2, 96}), L.qweight, L.qzeros, L.scales, c10::nullopt, 4, 32,
                        gptq::CheckpointFormat::kGptq);
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("gptq::autogptq_gemm: x has 96 features but the layer has K = 128"),
              std::string::npos)
        << e.what();
  }
}

// (bits, dtype, act_order, m)
class GemmCuda : public ::testing::TestWithParam<std::tuple<int, at::ScalarType, bool, int>> {};

TEST_P(GemmCuda, AutogptqMatchesFloat64) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA GPU";
  const auto [bits, dtype, act_order, m] = GetParam();
  // K = 1056 = 32 * 33: 9 groups of 128, the last short; N = 544: not a multiple of 128 columns.
  const int64_t K = 1056, N = 544, g = 128;
  for (auto format : {gptq::CheckpointFormat::kGptq, gptq::CheckpointFormat::kGptqV2}) {
    auto L = make_layer(bits, K, N, g, act_order, format, dtype, 100 * bits + m);
    auto x = at::randn({m, K}, at::kFloat).to(dtype);
    auto ref = at::matmul(x.to(at::kDouble), L.W.t());
    auto dev = at::kCUDA;
    c10::optional<at::Tensor> gi;
    if (act_order) gi = L.g_idx.to(dev);
    poison_cuda_allocator();
    auto y = gptq::autogptq_gemm(x.to(dev), L.qweight.to(dev), L.qzeros.to(dev), L.scales.to(dev), gi, bits, g,
                                 format);
    ASSERT_TRUE(y.is_cuda());
    ASSERT_EQ(y.sizes(), (std::vector<int64_t>{m, N}));
    EXPECT_FALSE(at::isnan(y).any().item<bool>()) << "an output element was not written";
    EXPECT_LT(rel_error(y, ref), dtype == at::kHalf ? 2e-3 : 1e-2)
        << "bits " << bits << " act_order " << act_order << " m " << m << " format " << gptq::to_string(format);
  }
}

INSTANTIATE_TEST_SUITE_P(WidthsDtypesActOrderRows, GemmCuda,
                         ::testing::Combine(::testing::Values(2, 3, 4, 8), ::testing::Values(at::kHalf, at::kBFloat16),
                                            ::testing::Values(false, true), ::testing::Values(1, 3, 17)));

TEST(GemmCudaExllamav2, ActOrderMatchesFloat64) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA GPU";
  for (int bits : {3, 4}) {
    auto L = make_layer(bits, 1024, 256, 128, true, gptq::CheckpointFormat::kGptq, at::kHalf, 7 + bits);
    auto [qs, perm] = gptq::exllamav2_prepare(L.qweight.cuda(), L.g_idx.cuda(), bits, 128);
    auto x = at::randn({5, 1024}, at::kFloat).to(at::kHalf);
    poison_cuda_allocator();
    auto y = gptq::exllamav2_gemm(x.cuda(), qs, L.qzeros.cuda(), L.scales.cuda(), perm, bits, 128,
                                  gptq::CheckpointFormat::kGptq);
    EXPECT_LT(rel_error(y, at::matmul(x.to(at::kDouble), L.W.t())), 2e-3) << bits;
  }
}

TEST(GemmCudaExllamav2, SmallBatchRowsMatchFloat64) {
  // m = 1..16 tokens: on CUDA 4-bit m = 2..8 (bf16 from 1) take the tensor-core GEMV, m = 1 fp16 the
  // half2 GEMV, m = 9 and 16 the tensor-core or Hopper GEMM (GPTQ_EXLLAMAV2_TCGEMV_MAX_M=16 hands them
  // to the tensor-core GEMV too: the memcheck stage of scripts/gpu-check runs this test so). K = 1032
  // (129 packed rows: a partial batch), N = 264 (a block with 8 features), groups of 64 and one group,
  // v1 zero points; one rounding of y as the tolerance.
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA GPU";
  for (auto dtype : {at::kHalf, at::kBFloat16}) {
    for (int64_t g : {64, -1}) {
      auto L = make_layer(4, 1032, 264, g, false, gptq::CheckpointFormat::kGptq, dtype, 17 + g);
      for (int64_t m : {1, 2, 3, 8, 9, 16}) {
        auto x = at::randn({m, 1032}, at::kFloat).to(dtype);
        poison_cuda_allocator();
        auto y = gptq::exllamav2_gemm(x.cuda(), L.qweight.cuda(), L.qzeros.cuda(), L.scales.cuda(), c10::nullopt, 4,
                                      g, gptq::CheckpointFormat::kGptq);
        EXPECT_LT(rel_error(y, at::matmul(x.to(at::kDouble), L.W.t())), dtype == at::kHalf ? 2e-3 : 1e-2)
            << dtype << " g " << g << " m " << m;
      }
    }
  }
}

TEST(GemmCudaExllamav2, LargeBatchRowsMatchFloat64) {
  // m = 1024 and 1300 tokens (one and a partial 256-token tile of the CUTLASS GEMM on the H100, which
  // the op takes at m = 1024..2048; elsewhere our GEMMs or dequantize + cuBLAS), K = 1024, N = 528 (a
  // last 128-feature tile of 16 features), groups of 64, 128 and one group, v1 and v2 zero points,
  // act-order rows sorted at load, fp16 and bf16; one rounding of y as the tolerance. The memcheck stage
  // of scripts/gpu-check runs it.
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA GPU";
  for (auto dtype : {at::kHalf, at::kBFloat16}) {
    for (auto format : {gptq::CheckpointFormat::kGptq, gptq::CheckpointFormat::kGptqV2}) {
      for (int64_t g : {64, 128, -1}) {
        const bool act_order = g == 128;
        auto L = make_layer(4, 1024, 528, g, act_order, format, dtype, 23 + g);
        at::Tensor qs = L.qweight.cuda(), perm;
        if (act_order) std::tie(qs, perm) = gptq::exllamav2_prepare(qs, L.g_idx.cuda(), 4, g);
        for (int64_t m : {1024, 1300}) {
          auto x = at::randn({m, 1024}, at::kFloat).to(dtype);
          poison_cuda_allocator();
          auto y = gptq::exllamav2_gemm(x.cuda(), qs, L.qzeros.cuda(), L.scales.cuda(),
                                        act_order ? c10::optional<at::Tensor>(perm) : c10::nullopt, 4, g, format);
          EXPECT_LT(rel_error(y, at::matmul(x.to(at::kDouble), L.W.t())), dtype == at::kHalf ? 2e-3 : 1e-2)
              << dtype << " g " << g << " m " << m << " format " << gptq::to_string(format);
        }
      }
    }
  }
}

TEST(GemmCudaAutogptq3, SmallBatchRowsMatchFloat64) {
  // 3 bits, fp16, m = 1..16 tokens: m = 2..16 take the 3-bit tensor-core GEMV, m = 1 the half2 GEMV
  // (GPTQ_AUTOGPTQ_TCGEMV3_MIN_M=1 hands m = 1 to the tensor-core GEMV too: the memcheck stage of
  // scripts/gpu-check runs this test so). K = 1120 (35 periods of 32 channels: a last batch of 3),
  // N = 544 (a last block of 32 features), groups of 32 and one group, v1 and v2 zero points; one
  // rounding of y as the tolerance.
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA GPU";
  for (auto format : {gptq::CheckpointFormat::kGptq, gptq::CheckpointFormat::kGptqV2}) {
    for (int64_t g : {32, -1}) {
      auto L = make_layer(3, 1120, 544, g, false, format, at::kHalf, 23 + g);
      for (int64_t m : {1, 2, 3, 8, 9, 16}) {
        auto x = at::randn({m, 1120}, at::kFloat).to(at::kHalf);
        poison_cuda_allocator();
        auto y = gptq::autogptq_gemm(x.cuda(), L.qweight.cuda(), L.qzeros.cuda(), L.scales.cuda(), c10::nullopt, 3, g,
                                     format);
        EXPECT_FALSE(at::isnan(y).any().item<bool>()) << "an output element was not written";
        EXPECT_LT(rel_error(y, at::matmul(x.to(at::kDouble), L.W.t())), 2e-3)
            << gptq::to_string(format) << " g " << g << " m " << m;
      }
    }
  }
}

TEST(GemmCudaAutogptq28, SmallBatchRowsMatchFloat64) {
  // 2 and 8 bits, fp16, m = 1..16 tokens: m = 2..16 take the 2- and 8-bit tensor-core GEMV, m = 1
  // the AutoGPTQ-style GEMV (GPTQ_AUTOGPTQ_TCGEMV28_MIN_M=1 hands m = 1 to the tensor-core GEMV too:
  // the memcheck stage of scripts/gpu-check runs this test so). K = 1120 (2 bits: 70 packed rows, a
  // last batch of 6; 8 bits: 280 rows, a last batch of 8), N = 544 (a last block of 32 features),
  // groups of 32 and one group, v1 and v2 zero points; one rounding of y as the tolerance.
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA GPU";
  for (int bits : {2, 8}) {
    for (auto format : {gptq::CheckpointFormat::kGptq, gptq::CheckpointFormat::kGptqV2}) {
      for (int64_t g : {32, -1}) {
        auto L = make_layer(bits, 1120, 544, g, false, format, at::kHalf, 29 + g + bits);
        for (int64_t m : {1, 2, 3, 8, 9, 16}) {
          auto x = at::randn({m, 1120}, at::kFloat).to(at::kHalf);
          poison_cuda_allocator();
          auto y = gptq::autogptq_gemm(x.cuda(), L.qweight.cuda(), L.qzeros.cuda(), L.scales.cuda(), c10::nullopt, bits,
                                       g, format);
          EXPECT_FALSE(at::isnan(y).any().item<bool>()) << "an output element was not written";
          EXPECT_LT(rel_error(y, at::matmul(x.to(at::kDouble), L.W.t())), 2e-3)
              << "bits " << bits << " " << gptq::to_string(format) << " g " << g << " m " << m;
        }
      }
    }
  }
}

}  // namespace
