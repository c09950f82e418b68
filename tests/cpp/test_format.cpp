// Specification of the checkpoint format ops (include/gptq/format.h): packing is a continuous
// little-endian bit stream for every width, dequantization follows W = s * (q - z) with v1's zeros
// stored minus one modulo 2^bits.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include "gptq/gptq.h"
#include "reference.h"

namespace {

using gptq_test::ref_dequantize;
using gptq_test::ref_pack_rows;
using gptq_test::rel_error;

class FormatBits : public ::testing::TestWithParam<int> {};

TEST_P(FormatBits, PackRowsMatchesBitByBitReferenceAndRoundTrips) {
  const int bits = GetParam();
  at::manual_seed(1000 + bits);
  // R = 96 rows: three 3-bit periods; 17 columns: no alignment along C is assumed.
  auto codes = at::randint(0, 1 << bits, {96, 17}, at::kInt);
  auto packed = gptq::pack_rows(codes, bits);
  ASSERT_EQ(packed.sizes(), (std::vector<int64_t>{96 * bits / 32, 17}));
  EXPECT_TRUE(at::equal(packed, ref_pack_rows(codes, bits)));
  EXPECT_TRUE(at::equal(gptq::unpack_rows(packed, bits), codes));
}

TEST_P(FormatBits, PackColsIsPackRowsOfTheTranspose) {
  const int bits = GetParam();
  at::manual_seed(2000 + bits);
  auto codes = at::randint(0, 1 << bits, {5, 64}, at::kInt);
  auto packed = gptq::pack_cols(codes, bits);
  ASSERT_EQ(packed.sizes(), (std::vector<int64_t>{5, 64 * bits / 32}));
  EXPECT_TRUE(at::equal(packed, ref_pack_rows(codes.t(), bits).t()));
  EXPECT_TRUE(at::equal(gptq::unpack_cols(packed, bits), codes));
}

TEST_P(FormatBits, DequantizeMatchesFloat64ReferenceForBothFormatsAndActOrder) {
  const int bits = GetParam();
  const int64_t K = 256, N = 96, g = 32, G = K / g;
  for (bool act_order : {false, true}) {
    for (auto format : {gptq::CheckpointFormat::kGptq, gptq::CheckpointFormat::kGptqV2}) {
      at::manual_seed(3000 + bits + 10 * act_order);
      auto q = at::randint(0, 1 << bits, {K, N}, at::kInt);
      auto z = at::randint(0, 1 << bits, {G, N}, at::kInt);  // includes 0, which v1 stores as 2^bits-1
      auto scales = (at::rand({G, N}, at::kFloat) + 0.01).to(at::kHalf);
      auto g_idx = at::arange(K, at::kInt).div(g, "floor");
      if (act_order) g_idx = g_idx.index_select(0, at::randperm(K, at::kLong));
      auto stored_z = format == gptq::CheckpointFormat::kGptq ? at::remainder(z - 1, 1 << bits) : z;
      auto W = gptq::dequantize(ref_pack_rows(q, bits), ref_pack_rows(stored_z.t(), bits).t().contiguous(), scales,
                                g_idx, bits, g, format);
      ASSERT_EQ(W.sizes(), (std::vector<int64_t>{N, K}));
      ASSERT_EQ(W.scalar_type(), at::kHalf);
      // One fp32 multiply then one rounding to fp16: relative error at most 2^-11 per element.
      EXPECT_LT(rel_error(W, ref_dequantize(q, z, scales, g_idx)), 1e-3)
          << "bits " << bits << " act_order " << act_order << " format " << gptq::to_string(format);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllWidths, FormatBits, ::testing::Values(2, 3, 4, 8));

TEST(Format, DequantizeWithoutGIdxUsesContiguousGroupsAndRaggedLastGroup) {
  // K = 96 with group_size 64: two groups, the second one short.
  const int bits = 4;
  const int64_t K = 96, N = 32, g = 64;
  at::manual_seed(7);
  auto q = at::randint(0, 16, {K, N}, at::kInt);
  auto z = at::randint(0, 16, {2, N}, at::kInt);
  auto scales = at::rand({2, N}, at::kFloat) + 0.1;
  auto W = gptq::dequantize(ref_pack_rows(q, bits), ref_pack_rows(z.t(), bits).t().contiguous(), scales,
                            c10::nullopt, bits, g, gptq::CheckpointFormat::kGptqV2);
  auto g_idx = at::arange(K, at::kInt).div(g, "floor");
  EXPECT_LT(rel_error(W, ref_dequantize(q, z, scales, g_idx)), 1e-6);  // fp32 throughout
}

TEST(Format, BadInputsGetErrorsNamingOpArgumentAndRule) {
  auto qweight = at::zeros({16, 64}, at::kInt);  // K = 128 at 4 bits
  auto qzeros = at::zeros({1, 8}, at::kInt);
  auto scales = at::ones({1, 64}, at::kHalf);
  auto expect_error = [](auto&& fn, const std::string& fragment) {
    try {
      fn();
      ADD_FAILURE() << "expected an error containing: " << fragment;
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  expect_error([&] { gptq::dequantize(qweight, qzeros, scales, c10::nullopt, 5, -1, gptq::CheckpointFormat::kGptq); },
               "gptq::dequantize: bits must be one of {2, 3, 4, 8}, got 5");
  expect_error(
      [&] {
        gptq::dequantize(qweight.to(at::kFloat), qzeros, scales, c10::nullopt, 4, -1, gptq::CheckpointFormat::kGptq);
      },
      "qweight must be int32");
  expect_error(
      [&] { gptq::dequantize(qweight, qzeros, scales, c10::nullopt, 4, 64, gptq::CheckpointFormat::kGptq); },
      "scales has 1 groups but K = 128 with group_size 64 needs 2");
  expect_error(
      [&] {
        gptq::dequantize(qweight, qzeros, scales, at::full({128}, 3, at::kInt), 4, 128, gptq::CheckpointFormat::kGptq);
      },
      "g_idx values must lie in [0, 1), found [3, 3]");
  expect_error([&] { gptq::pack_rows(at::full({8, 4}, 16, at::kInt), 4); }, "codes must lie in [0, 16)");
  expect_error([&] { gptq::pack_rows(at::zeros({30, 4}, at::kInt), 3); }, "not a multiple of 32");
  expect_error([&] { gptq::parse_checkpoint_format("gptq_v3"); }, "got \"gptq_v3\"");
}

TEST(Format, MetaTensorsGiveShapesWithoutData) {
  auto meta = at::TensorOptions().device(at::kMeta);
  auto W = gptq::dequantize(at::empty({384, 4096}, meta.dtype(at::kInt)), at::empty({32, 384}, meta.dtype(at::kInt)),
                            at::empty({32, 4096}, meta.dtype(at::kHalf)), c10::nullopt, 3, 128,
                            gptq::CheckpointFormat::kGptq);
  EXPECT_TRUE(W.is_meta());
  EXPECT_EQ(W.sizes(), (std::vector<int64_t>{4096, 4096}));
}

// ---- CUDA: the same function on the GPU -----------------------------------------------------------
class FormatCuda : public ::testing::TestWithParam<std::tuple<int, at::ScalarType, bool>> {};

TEST_P(FormatCuda, DequantizeMatchesFloat64Reference) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA GPU";
  const auto [bits, dtype, act_order] = GetParam();
  // A real projection shape (Llama-2-7B q_proj, K = N = 4096) with g128 and an odd-sized edge case.
  for (auto [K, N, g] : {std::tuple<int64_t, int64_t, int64_t>{4096, 4096, 128}, {96, 32, 32}}) {
    at::manual_seed(4000 + bits);
    const int64_t G = (K + g - 1) / g;
    auto q = at::randint(0, 1 << bits, {K, N}, at::kInt);
    auto z = at::randint(0, 1 << bits, {G, N}, at::kInt);
    auto scales = (at::rand({G, N}) * 0.02 + 1e-3).to(dtype);
    auto g_idx = at::arange(K, at::kInt).div(g, "floor");
    if (act_order) g_idx = g_idx.index_select(0, at::randperm(K, at::kLong));
    auto stored_z = at::remainder(z - 1, 1 << bits);
    auto dev = at::kCUDA;
    auto W = gptq::dequantize(ref_pack_rows(q, bits).to(dev), ref_pack_rows(stored_z.t(), bits).t().contiguous().to(dev),
                              scales.to(dev), g_idx.to(dev), bits, g, gptq::CheckpointFormat::kGptq);
    ASSERT_TRUE(W.is_cuda());
    // fp16 rounds once (2^-11 relative), bf16 once (2^-8).
    const double tol = dtype == at::kBFloat16 ? 1e-2 : (dtype == at::kHalf ? 2e-3 : 1e-6);
    EXPECT_LT(rel_error(W, ref_dequantize(q, z, scales, g_idx)), tol) << "K " << K << " N " << N;
    // Same bits as the CPU implementation.
    auto W_cpu = gptq::dequantize(ref_pack_rows(q, bits), ref_pack_rows(stored_z.t(), bits).t().contiguous(), scales,
                                  g_idx, bits, g, gptq::CheckpointFormat::kGptq);
    EXPECT_TRUE(at::equal(W.cpu(), W_cpu));
  }
}

TEST(FormatCudaEdges, EightBitWithKNotAMultipleOfTheStoreChunk) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA GPU";
  // 8-bit packing allows K = 36 (periods of 4 values): rows of W then do not start on 16-byte
  // boundaries and N = 40 is not a multiple of the 64-row tile; both tails are exercised.
  const int bits = 8;
  const int64_t K = 36, N = 40, g = 32, G = 2;
  at::manual_seed(77);
  auto q = at::randint(0, 256, {K, N}, at::kInt);
  auto z = at::randint(0, 256, {G, N}, at::kInt);
  auto scales = (at::rand({G, N}) * 0.02 + 1e-3).to(at::kHalf);
  auto g_idx = at::arange(K, at::kInt).div(g, "floor");
  auto W = gptq::dequantize(ref_pack_rows(q, bits).cuda(), ref_pack_rows(z.t(), bits).t().contiguous().cuda(),
                            scales.cuda(), g_idx.cuda(), bits, g, gptq::CheckpointFormat::kGptqV2);
  EXPECT_LT(rel_error(W, ref_dequantize(q, z, scales, g_idx)), 2e-3);
}

INSTANTIATE_TEST_SUITE_P(WidthsDtypes, FormatCuda,
                         ::testing::Combine(::testing::Values(2, 3, 4, 8),
                                            ::testing::Values(at::kHalf, at::kBFloat16, at::kFloat),
                                            ::testing::Bool()));

}  // namespace
