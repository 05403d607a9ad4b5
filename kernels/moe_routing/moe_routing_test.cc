#include "kernels/moe_routing/moe_routing.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace xpd::kernels {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

struct Config {
  int32_t num_experts = 8;
  int32_t num_groups = 2;
  int32_t top_groups = 1;
  int32_t top_k = 2;
  float scale = 2.5f;
  bool normalize = true;
};

struct Routed {
  std::vector<int32_t> ids;
  std::vector<float> weights;
};

absl::Status RunRouting(const Config& c, const std::vector<float>& logits,
                        const std::vector<float>& bias, Routed* out) {
  const int32_t num_tokens = static_cast<int32_t>(logits.size()) / c.num_experts;
  out->ids.assign(static_cast<size_t>(num_tokens) * c.top_k, -1);
  out->weights.assign(out->ids.size(), -1.0f);
  MoeRoutingArgs args;
  args.logits = logits.data();
  args.bias = bias.data();
  args.expert_ids = out->ids.data();
  args.expert_weights = out->weights.data();
  args.num_tokens = num_tokens;
  args.num_experts = c.num_experts;
  args.num_groups = c.num_groups;
  args.top_groups = c.top_groups;
  args.top_k = c.top_k;
  args.scale = c.scale;
  args.normalize = c.normalize;
  return MoeRoutingCpu(args);
}

Routed Route(const Config& c, const std::vector<float>& logits, const std::vector<float>& bias) {
  Routed r;
  absl::Status status = RunRouting(c, logits, bias, &r);
  EXPECT_TRUE(status.ok()) << status;
  return r;
}

// Inverse sigmoid, so tests can be written in terms of the affinities s.
std::vector<float> LogitsFromScores(const std::vector<double>& s) {
  std::vector<float> logits;
  for (double v : s) logits.push_back(static_cast<float>(std::log(v / (1.0 - v))));
  return logits;
}

TEST(MoeRoutingCpuTest, SpecWorkedExample) {
  // Spec §3.7.2: 8 experts, 2 groups of 4, keep 1 group, pick 2, scale 2.5.
  const std::vector<float> logits =
      LogitsFromScores({0.95, 0.20, 0.15, 0.10, 0.60, 0.58, 0.55, 0.05});
  const std::vector<float> bias = {0, 0, 0, 0, 0, -0.10f, 0.04f, 0};
  const Routed r = Route(Config{}, logits, bias);
  // Group 1 wins on the top-2 sum (1.19 > 1.15) although expert 0 has the
  // largest score; the bias swaps expert 5 for expert 6.
  EXPECT_THAT(r.ids, ElementsAre(4, 6));
  EXPECT_NEAR(r.weights[0], 1.3043f, 1e-4);
  EXPECT_NEAR(r.weights[1], 1.1957f, 1e-4);
}

TEST(MoeRoutingCpuTest, GroupScoreIsTopTwoSumNotMax) {
  // Max-based scoring keeps group 0 (0.9); top-2 sums are 1.0 vs 1.3.
  const std::vector<float> logits = LogitsFromScores({0.9, 0.1, 0.05, 0.05, 0.7, 0.6, 0.05, 0.05});
  const std::vector<float> bias(8, 0.0f);
  Config c;
  c.top_k = 1;
  EXPECT_THAT(Route(c, logits, bias).ids, ElementsAre(4));
}

TEST(MoeRoutingCpuTest, GroupScoreIncludesBias) {
  // Unbiased top-2 sums: g0 = 1.0, g1 = 0.9; the bias on expert 5 lifts g1 to 1.1.
  const std::vector<float> logits = LogitsFromScores({0.5, 0.5, 0.1, 0.1, 0.5, 0.4, 0.1, 0.1});
  const std::vector<float> bias = {0, 0, 0, 0, 0, 0.2f, 0, 0};
  Config c;
  c.top_k = 1;
  EXPECT_THAT(Route(c, logits, bias).ids, ElementsAre(5));
}

TEST(MoeRoutingCpuTest, SingleExpertGroupsScoreByThatExpert) {
  Config c;
  c.num_experts = 4;
  c.num_groups = 4;
  c.top_groups = 2;
  c.top_k = 2;
  c.scale = 1.0f;
  const std::vector<float> logits = LogitsFromScores({0.3, 0.9, 0.5, 0.8});
  const Routed r = Route(c, logits, std::vector<float>(4, 0.0f));
  EXPECT_THAT(r.ids, ElementsAre(1, 3));
  EXPECT_NEAR(r.weights[0], 0.9 / 1.7, 1e-6);
  EXPECT_NEAR(r.weights[1], 0.8 / 1.7, 1e-6);
}

TEST(MoeRoutingCpuTest, ExcludedGroupsAreMaskedWithNegativeInfinity) {
  // Every biased score is negative, group 1 (~-0.5) beats group 0 (~-1.5).
  // Masking excluded experts with 0 (HF's approximation) would let group 0's
  // experts outrank all of group 1; -inf keeps the choice inside group 1.
  Config c;
  c.top_k = 4;
  const std::vector<float> logits(8, 0.0f);  // s = 0.5 everywhere
  const std::vector<float> bias = {-2, -2, -2, -2, -1.0f, -1.1f, -1.2f, -1.3f};
  const Routed r = Route(c, logits, bias);
  EXPECT_THAT(r.ids, ElementsAre(4, 5, 6, 7));
  for (float w : r.weights) EXPECT_NEAR(w, 2.5 / 4, 1e-6);
}

TEST(MoeRoutingCpuTest, BiasSelectsButDoesNotWeigh) {
  Config c;
  c.num_experts = 4;
  c.num_groups = 1;
  c.top_groups = 1;
  c.top_k = 2;
  c.scale = 1.0f;
  const std::vector<float> logits = LogitsFromScores({0.6, 0.5, 0.4, 0.1});
  const std::vector<float> bias = {0, 0, 0.3f, 0};  // biased: 0.6, 0.5, 0.7, 0.1
  const Routed r = Route(c, logits, bias);
  EXPECT_THAT(r.ids, ElementsAre(2, 0));  // descending biased score
  EXPECT_NEAR(r.weights[0], 0.4, 1e-6);   // unbiased s, normalized by 0.4 + 0.6
  EXPECT_NEAR(r.weights[1], 0.6, 1e-6);
}

TEST(MoeRoutingCpuTest, WithoutNormalizeWeightsAreScaledScores) {
  Config c;
  c.normalize = false;
  const std::vector<float> logits =
      LogitsFromScores({0.95, 0.20, 0.15, 0.10, 0.60, 0.58, 0.55, 0.05});
  const std::vector<float> bias = {0, 0, 0, 0, 0, -0.10f, 0.04f, 0};
  const Routed r = Route(c, logits, bias);
  EXPECT_THAT(r.ids, ElementsAre(4, 6));
  EXPECT_NEAR(r.weights[0], 0.60 * 2.5, 1e-5);
  EXPECT_NEAR(r.weights[1], 0.55 * 2.5, 1e-5);
}

TEST(MoeRoutingCpuTest, TiesBreakTowardLowerIndex) {
  Config c;
  c.top_k = 3;
  c.scale = 1.0f;
  // Every expert and group ties: group 0 and experts 0, 1, 2 win.
  const Routed r = Route(c, std::vector<float>(8, 0.0f), std::vector<float>(8, 0.0f));
  EXPECT_THAT(r.ids, ElementsAre(0, 1, 2));
  for (float w : r.weights) EXPECT_NEAR(w, 1.0 / 3.0, 1e-6);
}

TEST(MoeRoutingCpuTest, MultipleTokensAreIndependent) {
  Config c;
  c.num_experts = 16;
  c.num_groups = 4;
  c.top_groups = 2;
  c.top_k = 3;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::vector<float> bias(16);
  for (float& b : bias) b = 0.1f * normal(rng);
  std::vector<float> logits(5 * 16);
  for (float& v : logits) v = normal(rng);

  const Routed all = Route(c, logits, bias);
  for (int t = 0; t < 5; ++t) {
    const std::vector<float> one(logits.begin() + t * 16, logits.begin() + (t + 1) * 16);
    const Routed single = Route(c, one, bias);
    for (int j = 0; j < 3; ++j) {
      EXPECT_EQ(all.ids[t * 3 + j], single.ids[j]) << "token " << t;
      EXPECT_EQ(all.weights[t * 3 + j], single.weights[j]) << "token " << t;
    }
  }
}

TEST(MoeRoutingCpuTest, ZeroTokensAcceptsNullTokenBuffers) {
  const std::vector<float> bias(8, 0.0f);
  MoeRoutingArgs args;
  args.bias = bias.data();
  args.num_tokens = 0;
  args.num_experts = 8;
  args.num_groups = 2;
  args.top_groups = 1;
  args.top_k = 2;
  EXPECT_TRUE(MoeRoutingCpu(args).ok());
}

TEST(MoeRoutingCpuTest, ValidationErrors) {
  std::vector<float> logits(8), bias(8), weights(2);
  std::vector<int32_t> ids(2);
  auto valid = [&] {
    MoeRoutingArgs a;
    a.logits = logits.data();
    a.bias = bias.data();
    a.expert_ids = ids.data();
    a.expert_weights = weights.data();
    a.num_tokens = 1;
    a.num_experts = 8;
    a.num_groups = 2;
    a.top_groups = 1;
    a.top_k = 2;
    return a;
  };
  ASSERT_TRUE(ValidateMoeRoutingArgs(valid()).ok());

  struct Case {
    std::function<void(MoeRoutingArgs&)> mutate;
    const char* message;
  };
  const std::vector<Case> cases = {
      {[](MoeRoutingArgs& a) { a.logits = nullptr; }, "logits"},
      {[](MoeRoutingArgs& a) { a.bias = nullptr; }, "bias"},
      {[](MoeRoutingArgs& a) { a.expert_ids = nullptr; }, "expert_ids"},
      {[](MoeRoutingArgs& a) { a.expert_weights = nullptr; }, "expert_weights"},
      {[](MoeRoutingArgs& a) { a.num_tokens = -1; }, "num_tokens must be >= 0, got -1"},
      {[](MoeRoutingArgs& a) { a.num_experts = 0; }, "num_experts"},
      {[](MoeRoutingArgs& a) { a.num_groups = 0; }, "num_groups"},
      {[](MoeRoutingArgs& a) { a.num_groups = 3; }, "divisible by num_groups (3)"},
      {[](MoeRoutingArgs& a) { a.top_groups = 3; }, "top_groups must be in [1, num_groups=2]"},
      {[](MoeRoutingArgs& a) { a.top_groups = 0; }, "top_groups"},
      {[](MoeRoutingArgs& a) { a.top_k = 5; }, "top_k must be in [1, 4]"},
      {[](MoeRoutingArgs& a) { a.top_k = 0; }, "top_k"},
  };
  for (const Case& c : cases) {
    MoeRoutingArgs a = valid();
    c.mutate(a);
    const absl::Status status = ValidateMoeRoutingArgs(a);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_THAT(status.message(), HasSubstr(c.message));
    EXPECT_EQ(MoeRoutingCpu(a).code(), absl::StatusCode::kInvalidArgument) << c.message;
  }
}

// Independent oracle, written differently on purpose: the kept group set is
// found by enumerating every subset of top_groups groups and keeping the one
// whose members all outrank every non-member, and experts are placed by
// counting how many kept experts outrank them.
Routed BruteForce(const Config& c, const std::vector<float>& logits,
                  const std::vector<float>& bias) {
  const int E = c.num_experts, G = c.num_groups, size = E / G;
  const int num_tokens = static_cast<int>(logits.size()) / E;
  Routed r;
  for (int t = 0; t < num_tokens; ++t) {
    std::vector<float> s(E), b(E);
    for (int e = 0; e < E; ++e) {
      s[e] = 1.0f / (1.0f + std::exp(-logits[t * E + e]));
      b[e] = s[e] + bias[e];
    }
    std::vector<float> gscore(G);
    for (int g = 0; g < G; ++g) {
      std::vector<float> members(b.begin() + g * size, b.begin() + (g + 1) * size);
      std::sort(members.begin(), members.end(), std::greater<float>());
      gscore[g] = size == 1 ? members[0] : members[0] + members[1];
    }
    auto outranks = [](float va, int a, float vb, int b) { return va > vb || (va == vb && a < b); };

    uint32_t kept_mask = 0;
    int found = 0;
    for (uint32_t mask = 0; mask < (1u << G); ++mask) {
      if (std::popcount(mask) != c.top_groups) continue;
      bool ok = true;
      for (int in = 0; in < G && ok; ++in) {
        if (!(mask >> in & 1)) continue;
        for (int out = 0; out < G && ok; ++out) {
          if (mask >> out & 1) continue;
          ok = outranks(gscore[in], in, gscore[out], out);
        }
      }
      if (ok) {
        kept_mask = mask;
        ++found;
      }
    }
    EXPECT_EQ(found, 1);

    std::vector<int> picked(c.top_k, -1);
    for (int e = 0; e < E; ++e) {
      if (!(kept_mask >> (e / size) & 1)) continue;
      int rank = 0;
      for (int o = 0; o < E; ++o) {
        if (o != e && (kept_mask >> (o / size) & 1) && outranks(b[o], o, b[e], e)) ++rank;
      }
      if (rank < c.top_k) picked[rank] = e;
    }
    double sum = 0;
    for (int e : picked) sum += s[e];
    for (int e : picked) {
      r.ids.push_back(e);
      r.weights.push_back(static_cast<float>((c.normalize ? s[e] / sum : s[e]) * c.scale));
    }
  }
  return r;
}

TEST(MoeRoutingCpuTest, MatchesBruteForceOnRandomInputs) {
  std::mt19937 rng(12345);
  struct Shape {
    int experts, groups;
  };
  const std::vector<Shape> shapes = {{8, 2}, {16, 4}, {12, 3}, {6, 6}, {32, 8}, {256, 8}, {5, 1}};
  for (int iter = 0; iter < 400; ++iter) {
    const Shape shape = shapes[iter % shapes.size()];
    Config c;
    c.num_experts = shape.experts;
    c.num_groups = shape.groups;
    c.top_groups = std::uniform_int_distribution<int>(1, shape.groups)(rng);
    c.top_k =
        std::uniform_int_distribution<int>(1, c.top_groups * (shape.experts / shape.groups))(rng);
    c.normalize = iter % 3 != 0;
    c.scale = std::uniform_real_distribution<float>(0.5f, 3.0f)(rng);
    // Every fourth case draws from a handful of values so that ties (in
    // experts and in group scores) are common.
    const bool coarse = iter % 4 == 0;
    std::normal_distribution<float> normal(0.0f, 2.0f);
    std::uniform_int_distribution<int> level(-2, 2);
    auto draw = [&] { return coarse ? 0.5f * level(rng) : normal(rng); };
    std::vector<float> bias(shape.experts);
    for (float& v : bias) v = coarse ? 0.0f : 0.05f * normal(rng);
    std::vector<float> logits(3 * shape.experts);
    for (float& v : logits) v = draw();

    const Routed got = Route(c, logits, bias);
    const Routed want = BruteForce(c, logits, bias);
    ASSERT_EQ(got.ids, want.ids) << "iteration " << iter;
    for (size_t i = 0; i < got.weights.size(); ++i) {
      EXPECT_NEAR(got.weights[i], want.weights[i], 1e-5f * std::max(1.0f, want.weights[i]))
          << "iteration " << iter << " slot " << i;
    }
  }
}

}  // namespace
}  // namespace xpd::kernels
