#include "kernels/core/vector_exp.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "gtest/gtest.h"

namespace xpd::kernels {
namespace {

float Exp1(float x) {
  alignas(32) float out[8];
  _mm256_store_ps(out, Exp8(_mm256_set1_ps(x)));
  return out[0];
}

// Distance in units in the last place between two positive finite floats.
int64_t UlpDistance(float a, float b) {
  int32_t ia, ib;
  std::memcpy(&ia, &a, 4);
  std::memcpy(&ib, &b, 4);
  return std::abs(static_cast<int64_t>(ia) - ib);
}

TEST(VectorExpTest, WithinTwoUlpOfDoublePrecisionExpOverTheWholeRange) {
  int64_t worst = 0;
  float worst_x = 0;
  for (float x = -86.9f; x < 88.6f; x += 0.000731f) {
    const float want = static_cast<float>(std::exp(static_cast<double>(x)));
    const int64_t d = UlpDistance(Exp1(x), want);
    if (d > worst) worst = d, worst_x = x;
  }
  EXPECT_LE(worst, 2) << "at x = " << worst_x;
}

TEST(VectorExpTest, EveryLaneIsComputedIndependently) {
  alignas(32) const float in[8] = {-3.5f, -1.0f, -0.25f, 0.0f, 0.5f, 1.0f, 7.0f, 20.0f};
  alignas(32) float out[8];
  _mm256_store_ps(out, Exp8(_mm256_load_ps(in)));
  for (int i = 0; i < 8; ++i) EXPECT_EQ(out[i], Exp1(in[i])) << i;
  EXPECT_EQ(out[3], 1.0f);
}

TEST(VectorExpTest, EdgesUnderflowToZeroOverflowToInfinityAndKeepNan) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(Exp1(-inf), 0.0f);
  EXPECT_EQ(Exp1(-87.5f), 0.0f);
  EXPECT_EQ(Exp1(-1000.0f), 0.0f);
  EXPECT_GT(Exp1(-86.9f), 0.0f);
  EXPECT_EQ(Exp1(89.0f), inf);
  EXPECT_EQ(Exp1(inf), inf);
  EXPECT_TRUE(std::isfinite(Exp1(88.6f)));
  EXPECT_TRUE(std::isnan(Exp1(std::numeric_limits<float>::quiet_NaN())));
}

}  // namespace
}  // namespace xpd::kernels
