// The single-process generator over the reference fixtures: greedy output,
// stop conditions, seeded sampling, KV accounting and request validation.
#include "common/runtime/generator.h"

#include "gtest/gtest.h"
#include "tests/model/fixture_model.h"

namespace xpd::testing {
namespace {

runtime::GenerateRequest Greedy(std::vector<int32_t> prompt, int64_t max_tokens) {
  runtime::GenerateRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0.0f;
  r.ignore_eos = true;
  return r;
}

TEST(GeneratorTest, GreedyBatchMatchesReferenceAndFreesKv) {
  FixtureModel f = LoadFixtureModel("bf16");
  ASSERT_NE(f.pool, nullptr);
  std::vector<runtime::GenerateRequest> requests;
  std::vector<std::vector<int32_t>> expected;
  for (const char* dir : {"single_len7", "batch3/row1", "single_len1"}) {
    const std::string path = ExpectedDir("bf16") + "/" + dir;
    requests.push_back(Greedy(LoadIds(path + "/prompt_ids.npy"), 8));
    expected.push_back(LoadIds(path + "/gen_ids.npy"));
  }
  const int64_t free_before = f.pool->num_free_blocks();
  runtime::Generator generator(*f.model, *f.pool);
  runtime::GenerateTimings timings;
  auto results = generator.Generate(requests, &timings);
  ASSERT_TRUE(results.ok()) << results.status();
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ((*results)[i].tokens, expected[i]) << "request " << i;
    EXPECT_EQ((*results)[i].finish_reason, runtime::FinishReason::kLength);
    EXPECT_EQ((*results)[i].logprobs.size(), 8u);
    for (float lp : (*results)[i].logprobs) EXPECT_LE(lp, 0.0f);
  }
  EXPECT_EQ(timings.prefill_tokens, 7 + 11 + 1);
  EXPECT_EQ(timings.decode_tokens, 3 * 7);
  EXPECT_EQ(f.pool->num_free_blocks(), free_before);
}

TEST(GeneratorTest, StopsAtStopTokenAndEos) {
  FixtureModel f = LoadFixtureModel("bf16");
  ASSERT_NE(f.pool, nullptr);
  const std::string path = ExpectedDir("bf16") + "/single_len7";
  const std::vector<int32_t> gen = LoadIds(path + "/gen_ids.npy");
  runtime::GenerateRequest request = Greedy(LoadIds(path + "/prompt_ids.npy"), 8);
  request.stop_token_ids = {gen[3]};
  runtime::Generator generator(*f.model, *f.pool);
  auto results = generator.Generate({request});
  ASSERT_TRUE(results.ok());
  EXPECT_EQ((*results)[0].tokens, std::vector<int32_t>(gen.begin(), gen.begin() + 4));
  EXPECT_EQ((*results)[0].finish_reason, runtime::FinishReason::kStop);
}

TEST(GeneratorTest, SeededSamplingIsReproducible) {
  FixtureModel f = LoadFixtureModel("fp8");
  ASSERT_NE(f.pool, nullptr);
  runtime::GenerateRequest request = Greedy({5, 17, 42}, 12);
  request.sampling = {.temperature = 1.0f, .top_p = 0.9f, .seed = 1234};
  runtime::Generator generator(*f.model, *f.pool);
  auto a = generator.Generate({request});
  auto b = generator.Generate({request});
  request.sampling.seed = 99;
  auto c = generator.Generate({request});
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ((*a)[0].tokens, (*b)[0].tokens);
  EXPECT_NE((*a)[0].tokens, (*c)[0].tokens);
}

TEST(GeneratorTest, RejectsBadRequestsWithPreciseStatus) {
  FixtureModel f = LoadFixtureModel("bf16");
  ASSERT_NE(f.pool, nullptr);
  runtime::Generator generator(*f.model, *f.pool);
  const int64_t free_before = f.pool->num_free_blocks();
  EXPECT_EQ(generator.Generate({Greedy({}, 4)}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(generator.Generate({Greedy({1, 2}, 0)}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(generator.Generate({Greedy({1, 512}, 4)}).status().code(),
            absl::StatusCode::kInvalidArgument);  // token outside the 512-entry vocabulary
  EXPECT_EQ(generator.Generate({Greedy({1, 2}, 300)}).status().code(),
            absl::StatusCode::kInvalidArgument);  // beyond max_position_embeddings (256)
  runtime::GenerateRequest bad_sampling = Greedy({1, 2}, 4);
  bad_sampling.sampling.top_p = 0.0f;
  EXPECT_EQ(generator.Generate({bad_sampling}).status().code(), absl::StatusCode::kInvalidArgument);
  // More KV than the pool holds (64 blocks of 16 tokens).
  std::vector<runtime::GenerateRequest> many(5, Greedy(std::vector<int32_t>(200, 3), 50));
  EXPECT_EQ(generator.Generate(many).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(f.pool->num_free_blocks(), free_before);
}

TEST(GeneratorTest, RankHoldingSomeExpertsReportsUnheldExpert) {
  auto checkpoint = model::Checkpoint::Open(std::string(kFixtureRoot) + "/models/bf16");
  ASSERT_TRUE(checkpoint.ok());
  auto backend = kernels::MakeCpuBackend(1);
  model::LoadOptions options;
  options.hold_expert = [](int64_t, int64_t expert) { return expert < 2; };
  auto m = model::DeepSeekModel::Load(**checkpoint, options, backend.get());
  ASSERT_TRUE(m.ok()) << m.status();
  auto pool = runtime::LatentKvPool::Create(
      {.num_layers = (*m)->cache_layers(), .latent_dim = 40, .block_size = 16, .num_blocks = 4});
  ASSERT_TRUE(pool.ok());
  runtime::Generator generator(**m, **pool);
  absl::Status status = generator.Generate({Greedy({5, 17, 42, 99}, 2)}).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("not held"), std::string::npos) << status;
}

}  // namespace
}  // namespace xpd::testing
