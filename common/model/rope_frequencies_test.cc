#include "common/model/rope_frequencies.h"

#include <cmath>

#include "gtest/gtest.h"

namespace xpd::model {
namespace {

ModelConfig V3RopeConfig() {
  ModelConfig config;
  config.qk_rope_head_dim = 64;
  config.rope_theta = 10000.0;
  config.rope_scaling = RopeScaling{};  // factor 40 over 4096, beta 32/1
  return config;
}

// Values from the table in spec §3.5.1 (independently derived there).
TEST(RopeFrequenciesTest, MatchesSpecTableForDeepSeekV3) {
  const std::vector<float> inv_freq = RopeInverseFrequencies(V3RopeConfig());
  ASSERT_EQ(inv_freq.size(), 32u);
  const struct {
    int index;
    double expected;
  } rows[] = {{0, 1.0},          {10, 5.623413e-2}, {11, 3.900693e-2}, {16, 5.5e-3},
              {22, 1.778279e-4}, {23, 3.333804e-5}, {31, 3.333804e-6}};
  for (const auto& row : rows) {
    EXPECT_NEAR(inv_freq[row.index], row.expected, row.expected * 2e-5) << "i=" << row.index;
  }
}

TEST(RopeFrequenciesTest, PlainRopeWithoutScaling) {
  ModelConfig config = V3RopeConfig();
  config.rope_scaling.reset();
  const std::vector<float> inv_freq = RopeInverseFrequencies(config);
  for (int i = 0; i < 32; ++i) {
    EXPECT_NEAR(inv_freq[i], std::pow(10000.0, -2.0 * i / 64.0),
                1e-6 * std::pow(10000.0, -2.0 * i / 64.0) + 1e-12);
  }
}

}  // namespace
}  // namespace xpd::model
