// The disaggregated cluster end to end: real processes on loopback, reached
// through the client SDK. Greedy output must equal the single-process engine
// token for token (architecture invariant 1), and every failure a client can
// cause or meet ends in a precise status, never a hang.
#include <random>
#include <thread>

#include "gtest/gtest.h"
#include "tests/integration/engine_reference.h"
#include "tests/integration/local_cluster.h"

namespace xpd::testing {
namespace {

constexpr const char* kModel = kClusterTestModel;

TEST(ClusterTest, ConcurrentGreedyRequestsEqualTheSingleProcessEngine) {
  LocalCluster cluster(
      {.model = kModel, .prefill_ranks = 2, .decode_ranks = 2, .prefill_max_step_tokens = 16});
  ASSERT_TRUE(cluster.Start().ok());
  std::mt19937 rng(5);
  std::vector<std::pair<std::vector<int32_t>, int32_t>> requests;
  for (int i = 0; i < 24; ++i) {
    std::vector<int32_t> prompt(1 + rng() % 60);
    for (int32_t& id : prompt) id = static_cast<int32_t>(rng() % 512);
    requests.push_back({prompt, static_cast<int32_t>(1 + rng() % 24)});
  }
  const auto expected = SingleProcessOutputs(requests);
  auto results = GenerateConcurrently(cluster.client(), requests);
  for (size_t i = 0; i < results.size(); ++i) {
    const absl::StatusOr<client::GenerateResult>& result = results[i];
    ASSERT_TRUE(result.ok()) << "request " << i << ": " << result.status();
    EXPECT_EQ(result->token_ids, expected[i]) << "request " << i;
    EXPECT_EQ(result->usage.prompt_tokens(), static_cast<int32_t>(requests[i].first.size()));
    EXPECT_EQ(result->usage.completion_tokens(), requests[i].second);
    EXPECT_EQ(result->finish_reason, xpd::v1::FINISH_REASON_LENGTH);
  }
  EXPECT_TRUE(cluster.Stop().empty());
}

TEST(ClusterTest, CancelFreesKvAndBadRequestsGetPreciseStatus) {
  LocalCluster cluster({.model = kModel, .decode_kv_tokens = 256});  // 4 blocks of 64
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<xpd::v1::RankLoad> idle = cluster.DecodeLoad(0);
  ASSERT_TRUE(idle.ok()) << idle.status();
  ASSERT_EQ(idle->kv_blocks_free(), idle->kv_blocks_total());

  // A long generation, cancelled after its first tokens: its KV must return.
  auto stream = cluster.client().StartGenerate(TokenRequest({3, 1, 4, 1, 5}, 240));
  xpd::v1::GenerateResponse response;
  ASSERT_TRUE(stream->Next(&response));
  stream->Cancel();
  int tokens = response.token_ids_size();
  while (stream->Next(&response)) tokens += response.token_ids_size();
  EXPECT_EQ(stream->Finish().code(), absl::StatusCode::kCancelled);
  EXPECT_LT(tokens, 240);
  absl::StatusOr<xpd::v1::RankLoad> load;
  for (int i = 0; i < 400; ++i) {  // bounded: the decode rank notices within a step
    load = cluster.DecodeLoad(0);
    if (load.ok() && load->kv_blocks_free() == load->kv_blocks_total()) break;
    absl::SleepFor(absl::Milliseconds(25));
  }
  ASSERT_TRUE(load.ok());
  EXPECT_EQ(load->kv_blocks_free(), load->kv_blocks_total());

  // Prompt + max_tokens beyond the 256-token context: INVALID_ARGUMENT.
  EXPECT_EQ(
      cluster.client().Generate(TokenRequest(std::vector<int32_t>(100, 7), 200)).status().code(),
      absl::StatusCode::kInvalidArgument);
  // Token id outside the vocabulary: INVALID_ARGUMENT naming it.
  absl::Status bad_token = cluster.client().Generate(TokenRequest({5, 9999}, 4)).status();
  EXPECT_EQ(bad_token.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_token.message().find("9999"), std::string::npos) << bad_token;
  // Text without a tokenizer in the model directory: FAILED_PRECONDITION.
  xpd::v1::GenerateRequest text;
  text.set_text("hello");
  text.mutable_sampling()->set_max_tokens(2);
  EXPECT_EQ(cluster.client().Generate(text).status().code(), absl::StatusCode::kFailedPrecondition);
  // A decode rank whose KV is taken (3 of its 4 blocks reserved by another
  // request) refuses a request needing 2 blocks: RESOURCE_EXHAUSTED.
  ASSERT_TRUE(cluster.ReserveOnDecode(0, "holder", 2, 190).ok());
  EXPECT_EQ(cluster.client().Generate(TokenRequest({2, 7}, 100)).status().code(),
            absl::StatusCode::kResourceExhausted);
  cluster.ReleaseOnDecode(0, "holder");
  EXPECT_TRUE(cluster.client().Generate(TokenRequest({2, 7}, 100)).ok());
  EXPECT_TRUE(cluster.Stop().empty());
}

TEST(ClusterTest, KilledPrefillRankGivesAClearErrorNotAHang) {
  LocalCluster cluster({.model = kModel});
  ASSERT_TRUE(cluster.Start().ok());
  cluster.KillPrefill(0);
  absl::StatusOr<client::GenerateResult> result =
      cluster.client().Generate(TokenRequest({1, 2, 3}, 4), {.timeout = absl::Seconds(60)});
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable) << result.status();
  std::vector<std::string> unclean = cluster.Stop();
  ASSERT_EQ(unclean.size(), 1u);  // only the rank the test killed
  EXPECT_NE(unclean[0].find("prefill-0"), std::string::npos) << unclean[0];
}

}  // namespace
}  // namespace xpd::testing
