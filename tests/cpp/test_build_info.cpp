// build_info() reports what the build really contains.
#include <gtest/gtest.h>

#include <algorithm>

#include "gptq/build.h"
#include "gptq/build_info.h"

TEST(BuildInfo, ReportsTorchVersionAndKernelFamilies) {
  const auto info = gptq::build_info();
  EXPECT_EQ(info.version, GPTQ_VERSION_STRING);
  EXPECT_FALSE(info.torch_version.empty());
  EXPECT_FALSE(info.cuda_status.empty());
  if (info.with_cuda) {
    ASSERT_FALSE(info.kernel_families.empty());
    bool has_dequant = false;
    for (const auto& f : info.kernel_families) {
      EXPECT_FALSE(f.archs.empty()) << f.name;
      has_dequant |= f.name == "dequant";
    }
    EXPECT_TRUE(has_dequant);
  } else {
    EXPECT_TRUE(info.kernel_families.empty());
  }
}

TEST(BuildInfo, ArchSpecificCodeRunsOnlyOnItsOwnArchitecture) {
  const auto info = gptq::build_info();
  if (!info.with_cuda) GTEST_SKIP() << "built without CUDA";
  auto contains = [](const std::vector<std::string>& v, const std::string& s) {
    return std::find(v.begin(), v.end(), s) != v.end();
  };
  const auto a100 = gptq::usable_kernel_families(8, 0), l4 = gptq::usable_kernel_families(8, 9),
             h100 = gptq::usable_kernel_families(9, 0), t4 = gptq::usable_kernel_families(7, 5);
  for (const auto& f : info.kernel_families) {
    const bool has80 = contains(f.archs, "80"), has90 = contains(f.archs, "90a") || contains(f.archs, "90");
    // sm_80 machine code runs on sm_80 and sm_89 (same major, higher minor), not on sm_90 or sm_75;
    // sm_90a code runs on sm_90 only.
    EXPECT_EQ(contains(a100, f.name), has80) << f.name;
    EXPECT_EQ(contains(l4, f.name), has80) << f.name;
    EXPECT_EQ(contains(h100, f.name), has90) << f.name;
    EXPECT_FALSE(contains(t4, f.name)) << f.name;
  }
}
