#include "common/runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace xpd::runtime {
namespace {

using ::testing::HasSubstr;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

SamplingParams Params(float temperature, int32_t top_k = 0, float top_p = 1.0f, uint64_t seed = 1) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = top_k;
  p.top_p = top_p;
  p.seed = seed;
  return p;
}

std::vector<float> RandomLogits(int n, uint32_t seed, float stddev = 2.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// Independent log-softmax in long double, written the textbook way.
std::vector<double> LogSoftmax(const std::vector<float>& logits) {
  long double max = -INFINITY;
  for (float x : logits) max = std::max<long double>(max, x);
  long double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<long double>(x) - max);
  std::vector<double> out;
  for (float x : logits) out.push_back(static_cast<double>(x - max - std::log(sum)));
  return out;
}

// Independent model of the sampling distribution: full sort, top-k, softmax
// at temperature T, nucleus, renormalize. Assumes finite logits.
std::vector<double> ExpectedDistribution(const std::vector<float>& logits,
                                         const SamplingParams& p) {
  const int n = static_cast<int>(logits.size());
  std::vector<int> ids(n);
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  if (p.top_k > 0 && p.top_k < n) ids.resize(p.top_k);
  std::vector<double> weight(ids.size());
  double total = 0;
  for (size_t j = 0; j < ids.size(); ++j) {
    weight[j] = std::exp((static_cast<double>(logits[ids[j]]) - logits[ids[0]]) / p.temperature);
    total += weight[j];
  }
  size_t keep = ids.size();
  if (p.top_p < 1.0f) {
    double cumulative = 0;
    for (keep = 0; keep < ids.size();) {
      cumulative += weight[keep++];
      if (cumulative >= p.top_p * total) break;
    }
  }
  double kept = 0;
  for (size_t j = 0; j < keep; ++j) kept += weight[j];
  std::vector<double> dist(n, 0.0);
  for (size_t j = 0; j < keep; ++j) dist[ids[j]] = weight[j] / kept;
  return dist;
}

std::vector<int> Histogram(const std::vector<float>& logits, const SamplingParams& p, int draws) {
  Sampler sampler(p);
  std::vector<int> counts(logits.size(), 0);
  for (int i = 0; i < draws; ++i) ++counts[sampler.Sample(logits).token];
  return counts;
}

// Tokens with zero expected mass must never appear; the rest must pass a
// chi-square test, with neighbouring ids merged into cells of at least 20
// expected draws so that rare tokens do not break the approximation. The seed
// is fixed, so this is deterministic; the bound (a tail of about 1e-5) only
// has to be honest.
void ExpectMatchesDistribution(const std::vector<int>& counts, const std::vector<double>& dist,
                               int draws) {
  double chi2 = 0, cell_expected = 0, cell_observed = 0;
  int cells = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (dist[i] == 0.0) {
      EXPECT_EQ(counts[i], 0) << "token " << i << " is outside the candidate set";
      continue;
    }
    cell_expected += dist[i] * draws;
    cell_observed += counts[i];
    if (cell_expected >= 20.0) {
      chi2 += (cell_observed - cell_expected) * (cell_observed - cell_expected) / cell_expected;
      ++cells;
      cell_expected = cell_observed = 0;
    }
  }
  if (cell_expected > 0) {  // leftover: a small last cell, still a fair term
    chi2 += (cell_observed - cell_expected) * (cell_observed - cell_expected) / cell_expected;
    ++cells;
  }
  const double df = std::max(cells - 1, 1);
  EXPECT_LT(chi2, df + 7.0 * std::sqrt(2.0 * df) + 10.0) << "df " << df;
}

TEST(SamplerTest, GreedyPicksArgmaxLowestIdOnTies) {
  Sampler sampler(Params(0.0f));
  EXPECT_EQ(sampler.Sample(std::vector<float>{1, 3, 2, 3}).token, 1);
  EXPECT_EQ(sampler.Sample(std::vector<float>{-5, -1, -1}).token, 1);
  EXPECT_EQ(sampler.Sample(std::vector<float>{7}).token, 0);
  const std::vector<float> logits = RandomLogits(1000, 3);
  const auto argmax = std::max_element(logits.begin(), logits.end()) - logits.begin();
  EXPECT_EQ(sampler.Sample(logits).token, argmax);
}

TEST(SamplerTest, SameSeedSameSequenceDifferentSeedDiffers) {
  const std::vector<float> logits = RandomLogits(50, 4, 0.5f);
  auto run = [&](uint64_t seed) {
    Sampler sampler(Params(1.0f, 0, 1.0f, seed));
    std::vector<int32_t> tokens;
    for (int i = 0; i < 200; ++i) tokens.push_back(sampler.Sample(logits).token);
    return tokens;
  };
  EXPECT_EQ(run(42), run(42));
  EXPECT_NE(run(42), run(43));
}

TEST(SamplerTest, GeneratorIsSplitMix64) {
  // 1024 equal logits: the token is floor(u * 1024), i.e. the top 10 bits of
  // the generator's output. The published SplitMix64 outputs for seed 0 are
  // e220a8397b1dcdaf, 6e789e6aa1b965f4, 06c45d188009454f, f88bb8a8724c81ec.
  // Pinning them keeps sequences identical across platforms and versions.
  Sampler sampler(Params(1.0f, 0, 1.0f, /*seed=*/0));
  const std::vector<float> flat(1024, 0.0f);
  EXPECT_EQ(sampler.Sample(flat).token, 0xe22 >> 2);
  EXPECT_EQ(sampler.Sample(flat).token, 0x6e7 >> 2);
  EXPECT_EQ(sampler.Sample(flat).token, 0x06c >> 2);
  EXPECT_EQ(sampler.Sample(flat).token, 0xf88 >> 2);
}

TEST(SamplerTest, TinyTemperatureApproachesGreedy) {
  const std::vector<float> logits = {0.0f, 1.5f, 2.0f, 1.9f, -3.0f};
  for (float t : {1e-3f, 1e-6f, 1e-30f, std::numeric_limits<float>::denorm_min()}) {
    Sampler sampler(Params(t));
    for (int i = 0; i < 500; ++i) ASSERT_EQ(sampler.Sample(logits).token, 2) << "T=" << t;
  }
  // Tied maxima share the limit's mass equally.
  const std::vector<float> tied = {2.0f, 5.0f, 5.0f, 1.0f};
  const std::vector<int> counts = Histogram(tied, Params(1e-6f), 4000);
  ExpectMatchesDistribution(counts, {0.0, 0.5, 0.5, 0.0}, 4000);
}

TEST(SamplerTest, TopKOneAndTinyTopPAreGreedy) {
  for (uint32_t seed = 0; seed < 20; ++seed) {
    const std::vector<float> logits = RandomLogits(500, seed, 0.3f);
    const int32_t argmax = std::max_element(logits.begin(), logits.end()) - logits.begin();
    Sampler top_k(Params(1.5f, /*top_k=*/1, 1.0f, seed));
    Sampler top_p(Params(1.5f, 0, /*top_p=*/1e-6f, seed));
    for (int i = 0; i < 20; ++i) {
      ASSERT_EQ(top_k.Sample(logits).token, argmax);
      ASSERT_EQ(top_p.Sample(logits).token, argmax);
    }
  }
}

TEST(SamplerTest, FrequenciesMatchSoftmax) {
  const std::vector<float> logits = {1.0f, 0.5f, -0.3f, 2.0f, 0.0f, 1.2f, -1.0f, 0.7f};
  constexpr int kDraws = 20000;
  for (float t : {1.0f, 0.7f, 2.0f}) {
    const SamplingParams p = Params(t, 0, 1.0f, 99);
    ExpectMatchesDistribution(Histogram(logits, p, kDraws), ExpectedDistribution(logits, p),
                              kDraws);
  }
}

TEST(SamplerTest, TopKAndTopPRestrictAndRenormalize) {
  const std::vector<float> logits = {1.0f, 0.5f, -0.3f, 2.0f, 0.0f, 1.2f, -1.0f, 0.7f};
  constexpr int kDraws = 20000;
  // softmax at T=1, most likely first: 3 (.39), 5 (.16), 0 (.13), 7 (.10), 1 (.08) ...
  const std::vector<SamplingParams> cases = {
      Params(1.0f, /*top_k=*/3), Params(1.0f, 0, /*top_p=*/0.6f),
      Params(0.8f, /*top_k=*/5, /*top_p=*/0.8f), Params(1.3f, /*top_k=*/4, /*top_p=*/0.99f)};
  for (const SamplingParams& p : cases) {
    const std::vector<double> dist = ExpectedDistribution(logits, p);
    SCOPED_TRACE(testing::Message() << "top_k " << p.top_k << " top_p " << p.top_p);
    ExpectMatchesDistribution(Histogram(logits, p, kDraws), dist, kDraws);
  }
}

TEST(SamplerTest, TiedNucleusKeepsLowerIds) {
  // 1000 equal logits, top_p 0.5: the nucleus is exactly ids 0..499.
  const std::vector<float> flat(1000, 0.25f);
  std::vector<double> uniform(1000, 0.0);
  std::fill(uniform.begin(), uniform.begin() + 500, 1.0 / 500);
  ExpectMatchesDistribution(Histogram(flat, Params(1.0f, 0, 0.5f, 5), 10000), uniform, 10000);
}

TEST(SamplerTest, NucleusCutInsideCloseWeights) {
  // A head of 40 tokens at scattered ids whose weights step by ~5% (so several
  // share a weight bucket and the cut falls between close neighbours) above a
  // long tail; the nucleus must match the reference token for token.
  constexpr int kVocab = 5000;
  std::vector<float> logits = RandomLogits(kVocab, 17, 1.0f);
  for (int j = 0; j < 40; ++j) logits[(j * 7919) % kVocab] = 12.0f - 0.05f * j;
  constexpr int kDraws = 10000;
  for (const SamplingParams& p : {Params(1.0f, 0, 0.5f, 3), Params(0.9f, 0, 0.3f, 4)}) {
    const std::vector<double> dist = ExpectedDistribution(logits, p);
    SCOPED_TRACE(testing::Message() << "T " << p.temperature << " top_p " << p.top_p);
    ASSERT_GT(std::count_if(dist.begin(), dist.end(), [](double d) { return d > 0; }), 5);
    ExpectMatchesDistribution(Histogram(logits, p, kDraws), dist, kDraws);
  }
}

TEST(SamplerTest, LargeNucleusFrequenciesMatch) {
  // A flat distribution: the nucleus holds most of the vocabulary, so nearly
  // every token survives the first filter and the buckets are crowded.
  const std::vector<float> logits = RandomLogits(3000, 29, 0.3f);
  constexpr int kDraws = 20000;
  for (const SamplingParams& p : {Params(1.0f, 0, 0.8f, 6), Params(0.4f, 0, 0.97f, 7)}) {
    SCOPED_TRACE(testing::Message() << "T " << p.temperature << " top_p " << p.top_p);
    ExpectMatchesDistribution(Histogram(logits, p, kDraws), ExpectedDistribution(logits, p),
                              kDraws);
  }
}

TEST(SamplerTest, LargeVocabularyMatchesReferenceSets) {
  // Covers both top-k strategies (a heap up to 2048, one nth_element above)
  // and the bucketed nucleus, each alone and combined.
  constexpr int kVocab = 129280;
  const std::vector<float> logits = RandomLogits(kVocab, 11, 3.0f);
  for (const SamplingParams& p :
       {Params(1.0f, 0, 0.9f), Params(0.6f, 0, 0.95f), Params(1.0f, 40), Params(0.7f, 50, 0.9f),
        Params(1.0f, 3000), Params(0.8f, 20000, 0.5f)}) {
    SCOPED_TRACE(testing::Message()
                 << "T " << p.temperature << " top_k " << p.top_k << " top_p " << p.top_p);
    const std::vector<double> dist = ExpectedDistribution(logits, p);
    Sampler sampler(p);
    for (int i = 0; i < 100; ++i) {
      const int32_t token = sampler.Sample(logits).token;
      ASSERT_GT(dist[token], 0.0) << "token " << token << " outside the candidate set";
    }
  }
}

TEST(SamplerTest, TopKTiesKeepLowerIdsWithEitherStrategy) {
  // Equal logits: top_k keeps exactly ids [0, k), whether the heap (k <= 2048)
  // or the nth_element path selects them.
  const std::vector<float> flat(2600, -1.5f);
  for (int32_t k : {7, 2048, 2049, 2500}) {
    SCOPED_TRACE(testing::Message() << "k " << k);
    std::vector<double> uniform(flat.size(), 0.0);
    std::fill(uniform.begin(), uniform.begin() + k, 1.0 / k);
    const int draws = 4 * k;  // cells of 5 ids, 20 expected draws each
    ExpectMatchesDistribution(Histogram(flat, Params(1.0f, k, 1.0f, k), draws), uniform, draws);
  }
}

TEST(SamplerTest, LargeTopKFrequenciesMatch) {
  // k = 2100 goes through the masked whole-vocabulary path.
  const std::vector<float> logits = RandomLogits(2600, 23, 0.5f);
  constexpr int kDraws = 20000;
  for (const SamplingParams& p : {Params(1.0f, 2100, 1.0f, 8), Params(0.5f, 2100, 0.9f, 9)}) {
    SCOPED_TRACE(testing::Message() << "T " << p.temperature << " top_p " << p.top_p);
    ExpectMatchesDistribution(Histogram(logits, p, kDraws), ExpectedDistribution(logits, p),
                              kDraws);
  }
}

TEST(SamplerTest, LogprobIsRawLogSoftmax) {
  const std::vector<float> logits = RandomLogits(3000, 8, 4.0f);
  const std::vector<double> reference = LogSoftmax(logits);
  for (const SamplingParams& p : {Params(0.0f), Params(1.0f), Params(0.3f, 20, 0.7f)}) {
    Sampler sampler(p);
    for (int i = 0; i < 50; ++i) {
      const SampledToken s = sampler.Sample(logits);
      // Not the tempered or truncated distribution: the model's own.
      EXPECT_NEAR(s.logprob, reference[s.token], 1e-5);
    }
  }
}

TEST(SamplerTest, TopLogprobsMostLikelyFirstTiesByLowerId) {
  const std::vector<float> logits = {0.5f, 3.0f, -1.0f, 3.0f, 2.0f, 0.5f, kNaN, 2.0f};
  const std::vector<double> reference =
      LogSoftmax({0.5f, 3.0f, -1.0f, 3.0f, 2.0f, 0.5f, -kInf, 2.0f});
  SamplingParams p = Params(0.0f);
  p.num_top_logprobs = 6;
  const SampledToken s = Sampler(p).Sample(logits);
  const std::vector<int32_t> want = {1, 3, 4, 7, 0, 5};
  ASSERT_EQ(s.top_logprobs.size(), want.size());
  for (size_t j = 0; j < want.size(); ++j) {
    EXPECT_EQ(s.top_logprobs[j].token, want[j]) << j;
    EXPECT_NEAR(s.top_logprobs[j].logprob, reference[want[j]], 1e-6) << j;
  }
  EXPECT_EQ(s.token, 1);
  EXPECT_FLOAT_EQ(s.logprob, s.top_logprobs[0].logprob);

  // More requested than the vocabulary holds: all of it; 0 requested: none.
  p.num_top_logprobs = 20;
  EXPECT_EQ(Sampler(p).Sample(std::vector<float>{1, 2, 3}).top_logprobs.size(), 3u);
  p.num_top_logprobs = 0;
  EXPECT_TRUE(Sampler(p).Sample(logits).top_logprobs.empty());
}

TEST(SamplerTest, NaNIsNeverChosenAndAllInvalidPicksTokenZero) {
  const std::vector<float> logits = {kNaN, 0.1f, kNaN, 0.2f, -kInf};
  for (const SamplingParams& p : {Params(0.0f), Params(1.0f), Params(5.0f, 0, 0.99f)}) {
    Sampler sampler(p);
    for (int i = 0; i < 200; ++i) {
      const SampledToken s = sampler.Sample(logits);
      ASSERT_TRUE(s.token == 1 || s.token == 3) << s.token;
      ASSERT_TRUE(std::isfinite(s.logprob));
    }
  }
  SamplingParams p = Params(1.0f);
  p.num_top_logprobs = 2;
  const SampledToken s = Sampler(p).Sample(std::vector<float>{kNaN, -kInf, kNaN});
  EXPECT_EQ(s.token, 0);
  EXPECT_EQ(s.logprob, -kInf);
  ASSERT_EQ(s.top_logprobs.size(), 2u);
  EXPECT_EQ(s.top_logprobs[0].token, 0);
  EXPECT_EQ(s.top_logprobs[1].token, 1);

  const SampledToken empty = Sampler(p).Sample(std::span<const float>());
  EXPECT_EQ(empty.token, 0);
  EXPECT_EQ(empty.logprob, -kInf);
}

TEST(SamplerTest, PositiveInfinityTakesAllTheMass) {
  const std::vector<float> logits = {1.0f, kInf, 2.0f, kInf};
  Sampler sampler(Params(1.0f));
  std::set<int32_t> seen;
  for (int i = 0; i < 200; ++i) seen.insert(sampler.Sample(logits).token);
  EXPECT_EQ(seen, (std::set<int32_t>{1, 3}));
}

TEST(SamplerTest, ValidationErrorsNameTheField) {
  EXPECT_TRUE(ValidateSamplingParams(SamplingParams{}).ok());
  EXPECT_TRUE(ValidateSamplingParams(Params(0.0f, 5, 0.1f)).ok());
  EXPECT_TRUE(ValidateSamplingParams(Params(100.0f)).ok());

  struct Case {
    SamplingParams params;
    const char* message;
  };
  SamplingParams logprobs_high;
  logprobs_high.num_top_logprobs = 21;
  SamplingParams logprobs_low;
  logprobs_low.num_top_logprobs = -1;
  const std::vector<Case> cases = {
      {Params(-1.0f), "temperature must be in [0, 100], got -1"},
      {Params(100.5f), "temperature must be in [0, 100], got 100.5"},
      {Params(kNaN), "temperature must be in [0, 100], got nan"},
      {Params(1.0f, -1), "top_k must be >= 0, got -1"},
      {Params(1.0f, 0, 0.0f), "top_p must be in (0, 1], got 0"},
      {Params(1.0f, 0, 1.5f), "top_p must be in (0, 1], got 1.5"},
      {logprobs_high, "num_top_logprobs must be in [0, 20], got 21"},
      {logprobs_low, "num_top_logprobs must be in [0, 20], got -1"},
  };
  for (const Case& c : cases) {
    const absl::Status status = ValidateSamplingParams(c.params);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_THAT(status.message(), HasSubstr(c.message));
  }
}

TEST(SamplerTest, SkipSamplesResumesTheSameStream) {
  const std::vector<float> logits = {0.1f, 0.5f, 0.2f, 1.0f, -0.3f, 0.7f};
  Sampler whole(Params(1.0f, 0, 1.0f, 77));
  std::vector<int32_t> expected;
  for (int i = 0; i < 40; ++i) expected.push_back(whole.Sample(logits).token);
  Sampler resumed(Params(1.0f, 0, 1.0f, 77));
  resumed.SkipSamples(3);
  for (int i = 3; i < 40; ++i) EXPECT_EQ(resumed.Sample(logits).token, expected[i]) << i;
}

}  // namespace
}  // namespace xpd::runtime
