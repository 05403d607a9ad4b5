#include "kernels/core/cpu_features.h"

#include <cstdio>

#include "gtest/gtest.h"

namespace xpd::kernels {
namespace {

TEST(CpuFeaturesTest, BaselineIsPresentAndConsistent) {
  const CpuFeatures& f = GetCpuFeatures();
  // The build's baseline is AVX2+FMA+F16C, so a running test implies them.
  EXPECT_TRUE(f.avx2);
  EXPECT_TRUE(f.fma);
  EXPECT_TRUE(f.f16c);
  if (f.HasAvx512Bf16()) {
    EXPECT_TRUE(f.HasAvx512());
  }
  EXPECT_EQ(&f, &GetCpuFeatures());
  EXPECT_NE(f.Describe().find("avx2"), std::string::npos) << f.Describe();
  std::printf("cpu: %s\n", f.Describe().c_str());
}

}  // namespace
}  // namespace xpd::kernels
