#include "kernels/ops/elementwise.h"

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/core/dtype.h"

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

TEST(SiluMulTest, RoundsItsOutputToBf16WhenAsked) {
  std::vector<float> gate = Random(2 * 21, 6), up = Random(2 * 21, 7), plain(2 * 21),
                     rounded(2 * 21);
  SiluMulArgs args{.gate = gate.data(),
                   .up = up.data(),
                   .in_stride = 21,
                   .out = plain.data(),
                   .out_stride = 21,
                   .rows = 2,
                   .dim = 21};  // 21: two vectors and a ragged end
  ASSERT_TRUE(SiluMul(args).ok());
  args.out = rounded.data();
  args.round_to_bf16 = true;
  ASSERT_TRUE(SiluMul(args).ok());
  for (int i = 0; i < 2 * 21; ++i) {
    EXPECT_EQ(std::bit_cast<uint32_t>(rounded[i]), std::bit_cast<uint32_t>(RoundToBf16(plain[i])))
        << i;
  }
}

// Against the scalar rule in dtype.h (itself tested on ties and NaN): ties to
// even both ways, values that round up into the next binade or to infinity,
// infinities, NaN payloads, denormals and signed zero, with row strides.
TEST(RoundToBf16RowsTest, MatchesTheScalarRuleOnEdgeValues) {
  std::vector<float> edge = {1.0f + 0x1p-8f,  // tie, even below: down
                             1.0f + 0x3p-8f,  // tie, odd below: up
                             1.0f + 0x1p-9f,
                             -(1.0f + 0x3p-8f),
                             std::numeric_limits<float>::max(),  // rounds up to infinity
                             0x1.ff8p-1f,                        // rounds up into the next binade
                             std::numeric_limits<float>::infinity(),
                             -std::numeric_limits<float>::infinity(),
                             std::numeric_limits<float>::quiet_NaN(),
                             std::bit_cast<float>(0x7f800001u),  // signaling NaN
                             std::numeric_limits<float>::denorm_min(),
                             0x1.234567p-130f,
                             -0.0f,
                             0.0f};
  const std::vector<float> more = Random(27, 8);
  edge.insert(edge.end(), more.begin(), more.end());  // 41 = 5 vectors and a ragged end
  const int64_t dim = static_cast<int64_t>(edge.size()), rows = 3, xs = dim + 3, ys = dim + 5;
  std::vector<float> x(rows * xs), y(rows * ys, 7.0f);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < dim; ++i) x[r * xs + i] = edge[(i + r) % dim];
  }
  ASSERT_TRUE(
      RoundToBf16Rows(
          {.x = x.data(), .x_stride = xs, .y = y.data(), .y_stride = ys, .rows = rows, .dim = dim})
          .ok());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < ys; ++i) {
      const uint32_t got = std::bit_cast<uint32_t>(y[r * ys + i]);
      if (i >= dim) {
        EXPECT_EQ(got, std::bit_cast<uint32_t>(7.0f)) << "stride padding written";
        continue;
      }
      const uint32_t want = uint32_t{F32ToBf16(x[r * xs + i])} << 16;
      EXPECT_EQ(got, want) << "row " << r << " column " << i << " x=" << x[r * xs + i];
    }
  }
  // In place.
  std::vector<float> in_place = edge;
  ASSERT_TRUE(
      RoundToBf16Rows({.x = in_place.data(), .y = in_place.data(), .rows = 1, .dim = dim}).ok());
  for (int64_t i = 0; i < dim; ++i) {
    EXPECT_EQ(std::bit_cast<uint32_t>(in_place[i]), uint32_t{F32ToBf16(edge[i])} << 16) << i;
  }
}

TEST(ElementwiseTest, RejectsNullBuffers) {
  EXPECT_FALSE(RmsNorm({}).ok());
  EXPECT_FALSE(ApplyRope({}).ok());
  EXPECT_FALSE(SiluMul({}).ok());
  EXPECT_FALSE(RoundToBf16Rows({}).ok());
}

}  // namespace
}  // namespace xpd::kernels
