// Checks of the engine's intermediate results against the dsv3-tiny
// reference: routing decisions, the latent KV cache after prefill, the MTP
// module; plus batch invariance and backend agreement.
#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/model/fixture_model.h"

namespace xpd::testing {
namespace {

struct Prefill {
  std::vector<int32_t> blocks;
  model::ForwardOutput output;
  model::RoutingTrace routing;
};

Prefill RunPrefill(FixtureModel& f, const std::vector<int32_t>& prompt,
                   model::AttentionForm form = model::AttentionForm::kAuto) {
  Prefill p;
  EXPECT_TRUE(f.pool->Reserve(prompt.size(), &p.blocks).ok());
  p.output.routing = &p.routing;
  model::ForwardBatch batch{.attention = form};
  batch.sequences.push_back(
      {.tokens = prompt, .start = 0, .block_table = p.blocks, .logits = model::LogitsRows::kAll});
  absl::Status status = f.model->Forward(batch, f.pool->cache(), &p.output);
  EXPECT_TRUE(status.ok()) << status;
  return p;
}

// Expected ids per token as a set; weights compared by expert id.
void ExpectSameRouting(const int32_t* ids, const float* weights, const int32_t* want_ids,
                       const float* want_weights, int64_t tokens, int64_t k,
                       const std::string& label) {
  for (int64_t t = 0; t < tokens; ++t) {
    std::set<int32_t> ours(ids + t * k, ids + (t + 1) * k);
    std::set<int32_t> theirs(want_ids + t * k, want_ids + (t + 1) * k);
    EXPECT_EQ(ours, theirs) << label << " token " << t;
    for (int64_t j = 0; j < k; ++j) {
      const int32_t expert = want_ids[t * k + j];
      const int64_t at = std::find(ids + t * k, ids + (t + 1) * k, expert) - (ids + t * k);
      if (at < k) {
        EXPECT_NEAR(weights[t * k + at], want_weights[t * k + j], 1e-4)
            << label << " token " << t << " expert " << expert;
      }
    }
  }
}

class ReferenceInternalsTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceInternalsTest, RoutedExpertsAndWeightsMatchPerLayer) {
  FixtureModel f = LoadFixtureModel(GetParam());
  ASSERT_NE(f.pool, nullptr);
  const std::string dir = ExpectedDir(GetParam()) + "/single_len7";
  const std::vector<int32_t> prompt = LoadIds(dir + "/prompt_ids.npy");
  const base::NpyArray want_ids = LoadNpy(dir + "/routing_expert_ids.npy");
  const base::NpyArray want_weights = LoadNpy(dir + "/routing_expert_weights.npy");
  Prefill p = RunPrefill(f, prompt);
  const int64_t k = f.model->config().num_experts_per_tok, t = prompt.size();
  ASSERT_EQ(want_ids.shape, (std::vector<int64_t>{3, t, k}));
  ASSERT_EQ(p.routing.expert_ids.size(), 3u);
  for (int layer = 0; layer < 3; ++layer) {
    ExpectSameRouting(p.routing.expert_ids[layer].data(), p.routing.expert_weights[layer].data(),
                      &want_ids.i32[layer * t * k], &want_weights.f32[layer * t * k], t, k,
                      "moe layer " + std::to_string(layer));
  }
}

TEST_P(ReferenceInternalsTest, LatentCacheAfterPrefillMatches) {
  FixtureModel f = LoadFixtureModel(GetParam());
  ASSERT_NE(f.pool, nullptr);
  const std::string dir = ExpectedDir(GetParam()) + "/single_len7";
  const std::vector<int32_t> prompt = LoadIds(dir + "/prompt_ids.npy");
  const base::NpyArray want = LoadNpy(dir + "/latent_kv.npy");
  Prefill p = RunPrefill(f, prompt);
  const int64_t layers = f.model->config().num_hidden_layers, t = prompt.size();
  const int64_t width = f.model->config().latent_dim();
  ASSERT_EQ(want.shape, (std::vector<int64_t>{layers, t, width}));
  for (int64_t layer = 0; layer < layers; ++layer) {
    for (int64_t pos = 0; pos < t; ++pos) {
      const float* ours = f.pool->cache().Row(p.blocks.data(), layer, pos);
      EXPECT_LE(MaxAbsDiff(ours, &want.f32[(layer * t + pos) * width], width), 1e-4)
          << "layer " << layer << " position " << pos;
    }
  }
}

TEST_P(ReferenceInternalsTest, MtpLogitsHiddenAndRoutingMatch) {
  FixtureModel f = LoadFixtureModel(GetParam());
  ASSERT_NE(f.pool, nullptr);
  ASSERT_TRUE(f.model->has_mtp());
  const int64_t vocab = f.model->config().vocab_size, d = f.model->config().hidden_size;
  const int64_t k = f.model->config().num_experts_per_tok;
  for (const char* name : {"single_len1", "single_len7", "single_len33"}) {
    const std::string dir = ExpectedDir(GetParam()) + "/" + name;
    const std::vector<int32_t> prompt = LoadIds(dir + "/prompt_ids.npy");
    const std::vector<int32_t> next = LoadIds(dir + "/mtp_next_ids.npy");
    const int64_t t = prompt.size();
    Prefill p = RunPrefill(f, prompt);
    EXPECT_LE(
        MaxAbsDiff(p.output.hidden.data(), LoadNpy(dir + "/mtp_hidden_in.npy").f32.data(), t * d),
        1e-3)
        << name;
    // The MTP input pairs h_i with t_{i+1}; the last pair uses the first greedy token.
    std::vector<int32_t> our_next(prompt.begin() + 1, prompt.end());
    our_next.push_back(ArgMax(&p.output.logits[(t - 1) * vocab], vocab));
    EXPECT_EQ(our_next, next) << name;
    const model::DeepSeekModel::MtpSequence entries[] = {{.hidden = p.output.hidden.data(),
                                                          .next_tokens = next,
                                                          .start = 0,
                                                          .block_table = p.blocks}};
    std::vector<float> logits;
    model::RoutingTrace routing;
    ASSERT_TRUE(f.model->ForwardMtp(entries, f.pool->cache(), &logits, &routing).ok());
    EXPECT_LE(MaxAbsDiff(logits.data(), LoadNpy(dir + "/mtp_logits.npy").f32.data(), t * vocab),
              1e-3)
        << name;
    if (std::string(name) == "single_len7") {
      ASSERT_EQ(routing.expert_ids.size(), 1u);
      ExpectSameRouting(routing.expert_ids[0].data(), routing.expert_weights[0].data(),
                        LoadNpy(dir + "/mtp_routing_expert_ids.npy").i32.data(),
                        LoadNpy(dir + "/mtp_routing_expert_weights.npy").f32.data(), t, k, "mtp");
    }
    f.pool->Free(p.blocks);
  }
}

TEST_P(ReferenceInternalsTest, LatentAndMhaFormsAgree) {
  FixtureModel f = LoadFixtureModel(GetParam());
  ASSERT_NE(f.pool, nullptr);
  const std::vector<int32_t> prompt =
      LoadIds(ExpectedDir(GetParam()) + "/single_len33/prompt_ids.npy");
  Prefill mha = RunPrefill(f, prompt, model::AttentionForm::kMha);
  Prefill latent = RunPrefill(f, prompt, model::AttentionForm::kLatent);
  ASSERT_EQ(mha.output.logits.size(), latent.output.logits.size());
  // The reference's own absorb-vs-naive difference is ~1e-5 (manifest checks).
  EXPECT_LE(
      MaxAbsDiff(mha.output.logits.data(), latent.output.logits.data(), mha.output.logits.size()),
      1e-4);
}

// A sequence's logits must not depend on what else is in the batch: rows are
// computed with the same operations whatever their neighbours, bit for bit.
TEST_P(ReferenceInternalsTest, BatchedEqualsAloneBitwise) {
  FixtureModel f = LoadFixtureModel(GetParam());
  ASSERT_NE(f.pool, nullptr);
  const int64_t vocab = f.model->config().vocab_size;
  std::vector<std::vector<int32_t>> prompts;
  for (int row = 0; row < 3; ++row) {
    prompts.push_back(
        LoadIds(ExpectedDir(GetParam()) + "/batch3/row" + std::to_string(row) + "/prompt_ids.npy"));
  }
  std::vector<std::vector<int32_t>> blocks(3);
  model::ForwardBatch batch;
  for (int s = 0; s < 3; ++s) {
    ASSERT_TRUE(f.pool->Reserve(prompts[s].size() + 1, &blocks[s]).ok());
    batch.sequences.push_back({.tokens = prompts[s], .start = 0, .block_table = blocks[s]});
  }
  model::ForwardOutput together;
  ASSERT_TRUE(f.model->Forward(batch, f.pool->cache(), &together).ok());
  // One decode step for all three together, then each alone again.
  const int32_t token = 7;
  model::ForwardBatch step;
  for (int s = 0; s < 3; ++s) {
    step.sequences.push_back({.tokens = std::span<const int32_t>(&token, 1),
                              .start = static_cast<int64_t>(prompts[s].size()),
                              .block_table = blocks[s]});
  }
  model::ForwardOutput step_together;
  ASSERT_TRUE(f.model->Forward(step, f.pool->cache(), &step_together).ok());
  for (int s = 0; s < 3; ++s) {
    Prefill alone = RunPrefill(f, prompts[s]);
    const float* alone_last = &alone.output.logits[(prompts[s].size() - 1) * vocab];
    EXPECT_EQ(MaxAbsDiff(alone_last, &together.logits[together.first_row[s] * vocab], vocab), 0.0f)
        << "prefill row " << s;
    model::ForwardBatch one;
    one.sequences.push_back(step.sequences[s]);
    one.sequences[0].block_table = alone.blocks;
    model::ForwardOutput step_alone;
    ASSERT_TRUE(f.model->Forward(one, f.pool->cache(), &step_alone).ok());
    EXPECT_EQ(MaxAbsDiff(step_alone.logits.data(),
                         &step_together.logits[step_together.first_row[s] * vocab], vocab),
              0.0f)
        << "decode row " << s;
    f.pool->Free(alone.blocks);
  }
}

TEST_P(ReferenceInternalsTest, ReferenceBackendAgreesWithOptimizedBackend) {
  FixtureModel fast = LoadFixtureModel(GetParam(), kernels::Precision::kF32, BackendKind::kCpu, 3);
  FixtureModel plain =
      LoadFixtureModel(GetParam(), kernels::Precision::kF32, BackendKind::kReference);
  ASSERT_NE(fast.pool, nullptr);
  ASSERT_NE(plain.pool, nullptr);
  const std::vector<int32_t> prompt =
      LoadIds(ExpectedDir(GetParam()) + "/single_len33/prompt_ids.npy");
  Prefill a = RunPrefill(fast, prompt), b = RunPrefill(plain, prompt);
  EXPECT_LE(MaxAbsDiff(a.output.logits.data(), b.output.logits.data(), a.output.logits.size()),
            1e-4);
}

INSTANTIATE_TEST_SUITE_P(AllCheckpoints, ReferenceInternalsTest,
                         ::testing::Values("bf16", "fp8", "fp8-block16", "fp8-sharded"),
                         VariantName);

}  // namespace
}  // namespace xpd::testing
