// End-to-end checks against DeepSeek's reference outputs for the dsv3-tiny
// checkpoints (f32 compute): prompt logits, greedy continuations through the
// paged KV cache, batching, and both attention forms.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/model/fixture_model.h"

namespace xpd::testing {
namespace {

constexpr float kLogitTolerance = 1e-3f;  // manifest: tolerances.fp32_engine

struct Sequence {
  std::vector<int32_t> prompt;
  std::vector<int32_t> gen_ids;
  base::NpyArray prompt_logits, step_logits;
};

Sequence LoadSequence(const std::string& dir) {
  return {LoadIds(dir + "/prompt_ids.npy"), LoadIds(dir + "/gen_ids.npy"),
          LoadNpy(dir + "/prompt_logits.npy"), LoadNpy(dir + "/step_logits.npy")};
}

// Prefills every sequence of `group` in one batch and decodes greedily in
// lockstep; checks every logit row and token against the reference.
void RunAndCompare(FixtureModel& f, const std::vector<Sequence>& group, model::AttentionForm form,
                   const std::string& label) {
  const int64_t vocab = f.model->config().vocab_size;
  std::vector<std::vector<int32_t>> blocks(group.size());
  model::ForwardBatch prefill{.attention = form};
  for (size_t s = 0; s < group.size(); ++s) {
    const int64_t length = group[s].prompt.size() + group[s].gen_ids.size();
    ASSERT_TRUE(f.pool->Reserve(length, &blocks[s]).ok());
    prefill.sequences.push_back({.tokens = group[s].prompt,
                                 .start = 0,
                                 .block_table = blocks[s],
                                 .logits = model::LogitsRows::kAll});
  }
  model::ForwardOutput out;
  ASSERT_TRUE(f.model->Forward(prefill, f.pool->cache(), &out).ok());
  std::vector<int32_t> next(group.size());
  for (size_t s = 0; s < group.size(); ++s) {
    const Sequence& seq = group[s];
    const int64_t t = seq.prompt.size();
    const float* ours = &out.logits[out.first_row[s] * vocab];
    EXPECT_LE(MaxAbsDiff(ours, seq.prompt_logits.f32.data(), t * vocab), kLogitTolerance)
        << label << " sequence " << s << " prompt logits";
    const float* last = ours + (t - 1) * vocab;
    EXPECT_LE(MaxAbsDiff(last, seq.step_logits.f32.data(), vocab), kLogitTolerance);
    next[s] = ArgMax(last, vocab);
    EXPECT_EQ(next[s], seq.gen_ids[0]) << label << " sequence " << s << " step 0";
  }
  const size_t steps = group[0].gen_ids.size();
  for (size_t k = 1; k < steps; ++k) {
    model::ForwardBatch step{.attention = form};
    for (size_t s = 0; s < group.size(); ++s) {
      step.sequences.push_back({.tokens = std::span<const int32_t>(&next[s], 1),
                                .start = static_cast<int64_t>(group[s].prompt.size() + k - 1),
                                .block_table = blocks[s]});
    }
    ASSERT_TRUE(f.model->Forward(step, f.pool->cache(), &out).ok());
    for (size_t s = 0; s < group.size(); ++s) {
      const float* ours = &out.logits[out.first_row[s] * vocab];
      EXPECT_LE(MaxAbsDiff(ours, &group[s].step_logits.f32[k * vocab], vocab), kLogitTolerance)
          << label << " sequence " << s << " step " << k;
      next[s] = ArgMax(ours, vocab);
      EXPECT_EQ(next[s], group[s].gen_ids[k]) << label << " sequence " << s << " step " << k;
    }
  }
  for (auto& b : blocks) f.pool->Free(b);
}

class ReferenceLogitsTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceLogitsTest, SingleSequencesMatchPromptLogitsAndGreedyContinuation) {
  FixtureModel f = LoadFixtureModel(GetParam());
  ASSERT_NE(f.pool, nullptr);
  for (const char* name : {"single_len1", "single_len7", "single_len33"}) {
    RunAndCompare(f, {LoadSequence(ExpectedDir(GetParam()) + "/" + name)},
                  model::AttentionForm::kAuto, name);
  }
}

TEST_P(ReferenceLogitsTest, BatchOfDifferentLengthsMatchesReference) {
  FixtureModel f = LoadFixtureModel(GetParam());
  ASSERT_NE(f.pool, nullptr);
  std::vector<Sequence> group;
  for (int row = 0; row < 3; ++row) {
    group.push_back(LoadSequence(ExpectedDir(GetParam()) + "/batch3/row" + std::to_string(row)));
  }
  RunAndCompare(f, group, model::AttentionForm::kAuto, "batch3");
}

TEST_P(ReferenceLogitsTest, MhaFormMatchesNaiveReference) {
  FixtureModel f = LoadFixtureModel(GetParam());
  ASSERT_NE(f.pool, nullptr);
  // The naive reference's step logits are step_logits_naive.npy.
  Sequence seq = LoadSequence(ExpectedDir(GetParam()) + "/single_len33");
  seq.step_logits = LoadNpy(ExpectedDir(GetParam()) + "/single_len33/step_logits_naive.npy");
  RunAndCompare(f, {seq}, model::AttentionForm::kMha, "mha");
}

TEST_P(ReferenceLogitsTest, LatentFormAlsoServesPrefill) {
  FixtureModel f = LoadFixtureModel(GetParam());
  ASSERT_NE(f.pool, nullptr);
  RunAndCompare(f, {LoadSequence(ExpectedDir(GetParam()) + "/single_len33")},
                model::AttentionForm::kLatent, "latent");
}

INSTANTIATE_TEST_SUITE_P(AllCheckpoints, ReferenceLogitsTest,
                         ::testing::Values("bf16", "fp8", "fp8-block16", "fp8-sharded"),
                         VariantName);

}  // namespace
}  // namespace xpd::testing
