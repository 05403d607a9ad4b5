#include "kernels/ops/elementwise.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace xpd::kernels {
namespace {

std::vector<float> Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

TEST(RmsNormTest, MatchesDoublePrecisionFormulaWithStrides) {
  const int64_t rows = 3, dim = 37, stride = 40;
  std::vector<float> x = Random(rows * stride, 1), w = Random(dim, 2), y(rows * stride, 0.0f);
  ASSERT_TRUE(RmsNorm({.x = x.data(),
                       .x_stride = stride,
                       .weight = w.data(),
                       .y = y.data(),
                       .y_stride = stride,
                       .rows = rows,
                       .dim = dim,
                       .eps = 1e-6f})
                  .ok());
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0;
    for (int64_t i = 0; i < dim; ++i) sum += double(x[r * stride + i]) * x[r * stride + i];
    const double scale = 1.0 / std::sqrt(sum / dim + 1e-6);
    for (int64_t i = 0; i < dim; ++i) {
      EXPECT_NEAR(y[r * stride + i], w[i] * x[r * stride + i] * scale, 1e-5);
    }
  }
}

TEST(ApplyRopeTest, RotatesAdjacentPairsPerHead) {
  const int heads = 2, dim = 4;
  std::vector<float> x = Random(3 * heads * 6, 3), original = x;
  const int64_t positions[] = {0, 5, 1000};
  const float inv_freq[] = {1.0f, 0.01f};
  // Each row: 2 heads of 6 channels, rope on channels 2..5 of each head.
  ASSERT_TRUE(ApplyRope({.x = x.data() + 2,
                         .row_stride = heads * 6,
                         .head_stride = 6,
                         .heads = heads,
                         .rows = 3,
                         .rope_dim = dim,
                         .positions = positions,
                         .inv_freq = inv_freq})
                  .ok());
  for (int r = 0; r < 3; ++r) {
    for (int h = 0; h < heads; ++h) {
      const float* in = &original[r * 12 + h * 6];
      const float* out = &x[r * 12 + h * 6];
      EXPECT_EQ(out[0], in[0]);  // untouched nope channels
      EXPECT_EQ(out[1], in[1]);
      for (int i = 0; i < 2; ++i) {
        const double angle = double(positions[r]) * inv_freq[i];
        const double a = in[2 + 2 * i], b = in[3 + 2 * i];
        EXPECT_NEAR(out[2 + 2 * i], a * std::cos(angle) - b * std::sin(angle), 2e-4);
        EXPECT_NEAR(out[3 + 2 * i], a * std::sin(angle) + b * std::cos(angle), 2e-4);
      }
    }
  }
}

TEST(SiluMulTest, ComputesSiluOfGateTimesUp) {
  std::vector<float> gate = Random(10, 4), up = Random(10, 5), out(10);
  ASSERT_TRUE(SiluMul({.gate = gate.data(),
                       .up = up.data(),
                       .in_stride = 5,
                       .out = out.data(),
                       .out_stride = 5,
                       .rows = 2,
                       .dim = 5})
                  .ok());
  for (int i = 0; i < 10; ++i) {
    const double g = gate[i];
    EXPECT_NEAR(out[i], g / (1 + std::exp(-g)) * up[i], 1e-6);
  }
}

TEST(ElementwiseTest, RejectsNullBuffers) {
  EXPECT_FALSE(RmsNorm({}).ok());
  EXPECT_FALSE(ApplyRope({}).ok());
  EXPECT_FALSE(SiluMul({}).ok());
}

}  // namespace
}  // namespace xpd::kernels
