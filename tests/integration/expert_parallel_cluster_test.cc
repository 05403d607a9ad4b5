// Expert parallelism end to end: decode ranks of one EP group as separate
// processes exchanging tokens over gRPC every MoE layer, a controller that
// places, measures and moves experts. Greedy output must equal the
// single-process engine for every group size, with redundant experts, and
// across a rebalance made while requests stream; the controller's absence
// must not disturb serving, and a rollout a rank cannot prepare must leave
// the old placement serving.
#include <filesystem>
#include <random>

#include "gtest/gtest.h"
#include "tests/integration/engine_reference.h"
#include "tests/integration/local_cluster.h"

namespace xpd::testing {
namespace {

constexpr const char* kModel = kClusterTestModel;

using Request = std::pair<std::vector<int32_t>, int32_t>;

std::vector<Request> RandomRequests(int count, uint32_t seed, int max_prompt, int max_tokens) {
  std::mt19937 rng(seed);
  std::vector<Request> requests;
  for (int i = 0; i < count; ++i) {
    std::vector<int32_t> prompt(1 + rng() % max_prompt);
    for (int32_t& id : prompt) id = static_cast<int32_t>(rng() % 512);
    requests.push_back({prompt, static_cast<int32_t>(1 + rng() % max_tokens)});
  }
  return requests;
}

// Runs the requests concurrently and checks them against the engine.
void ExpectSameAsEngine(LocalCluster& cluster, const std::vector<Request>& requests) {
  const auto expected = SingleProcessOutputs(requests);
  auto results = GenerateConcurrently(cluster.client(), requests);
  for (size_t i = 0; i < results.size(); ++i) {
    const absl::StatusOr<client::GenerateResult>& result = results[i];
    ASSERT_TRUE(result.ok()) << "request " << i << ": " << result.status();
    EXPECT_EQ(result->token_ids, expected[i]) << "request " << i;
  }
}

std::unique_ptr<xpd::v1::Controller::Stub> ControllerStub(const LocalCluster& cluster) {
  return xpd::v1::Controller::NewStub(
      grpc::CreateChannel(cluster.controller(), grpc::InsecureChannelCredentials()));
}

absl::StatusOr<xpd::v1::PlacementStatusResponse> PlacementStatus(const LocalCluster& cluster) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  xpd::v1::PlacementStatusResponse response;
  const grpc::Status status = ControllerStub(cluster)->PlacementStatus(
      &context, xpd::v1::PlacementStatusRequest(), &response);
  if (!status.ok()) return absl::UnavailableError(status.error_message());
  return response;
}

absl::StatusOr<xpd::v1::RebalanceResponse> Rebalance(const LocalCluster& cluster, bool dry_run) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
  xpd::v1::RebalanceRequest request;
  request.set_dry_run(dry_run);
  xpd::v1::RebalanceResponse response;
  const grpc::Status status = ControllerStub(cluster)->Rebalance(&context, request, &response);
  if (!status.ok()) return absl::UnavailableError(status.error_message());
  return response;
}

// Waits (bounded) until the controller has seen expert load from the ranks.
void AwaitLoadReports(const LocalCluster& cluster) {
  for (int i = 0; i < 200; ++i) {
    absl::StatusOr<xpd::v1::PlacementStatusResponse> status = PlacementStatus(cluster);
    if (status.ok() && status->window_tokens() > 0) return;
    absl::SleepFor(absl::Milliseconds(50));  // ranks report every heartbeat
  }
  FAIL() << "no expert load reached the controller";
}

// The same few prompts over and over: the same experts stay hot.
std::vector<Request> SkewedRequests(int count, int max_tokens) {
  const std::vector<std::vector<int32_t>> prompts = {{7, 7, 7, 7, 7, 7, 7, 7}, {42, 42, 42, 42}};
  std::vector<Request> requests;
  for (int i = 0; i < count; ++i) requests.push_back({prompts[i % prompts.size()], max_tokens});
  return requests;
}

struct GroupCase {
  int ranks;
  int redundant;
};

class ExpertParallelClusterTest : public ::testing::TestWithParam<GroupCase> {};

TEST_P(ExpertParallelClusterTest, GreedyOutputEqualsTheSingleProcessEngine) {
  const GroupCase param = GetParam();
  LocalCluster cluster(
      {.model = kModel,
       .prefill_ranks = 1,
       .decode_ranks = param.ranks,
       .controller_args = {"--redundant-experts", std::to_string(param.redundant)}});
  ASSERT_TRUE(cluster.Start().ok());
  // One request alone first: all but one rank of the group have no tokens
  // and must still serve their experts every step.
  ExpectSameAsEngine(cluster, {{{3, 1, 4, 1, 5, 9, 2, 6}, 20}});
  ExpectSameAsEngine(cluster, RandomRequests(12, 11 + param.ranks, 40, 16));
  absl::StatusOr<xpd::v1::PlacementStatusResponse> status = PlacementStatus(cluster);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(status->placement().num_ranks(), param.ranks);
  EXPECT_EQ(status->placement().slots_per_layer(), 16 + param.redundant);
  EXPECT_TRUE(cluster.Stop().empty());
}

INSTANTIATE_TEST_SUITE_P(Groups, ExpertParallelClusterTest,
                         ::testing::Values(GroupCase{1, 0}, GroupCase{2, 0}, GroupCase{4, 0},
                                           GroupCase{2, 2}, GroupCase{4, 4}),
                         [](const ::testing::TestParamInfo<GroupCase>& info) {
                           return "ep" + std::to_string(info.param.ranks) + "_redundant" +
                                  std::to_string(info.param.redundant);
                         });

std::string TempPlacementFile(const std::string& name) {
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / ("xpd_ep_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::filesystem::remove(dir / name);
  return (dir / name).string();
}

// A forced rebalance while requests stream: every request completes with the
// engine's tokens, and the group ends on the new epoch.
TEST(ExpertParallelRebalanceTest, RebalanceWhileStreamingKeepsOutputs) {
  LocalCluster cluster({.model = kModel,
                        .decode_ranks = 2,
                        .controller_args = {"--redundant-experts", "2", "--placement-file",
                                            TempPlacementFile("streaming.json")}});
  ASSERT_TRUE(cluster.Start().ok());
  ExpectSameAsEngine(cluster, SkewedRequests(4, 8));  // some load for the balancer
  AwaitLoadReports(cluster);

  const std::vector<Request> requests = SkewedRequests(6, 120);
  const auto expected = SingleProcessOutputs(requests);
  std::vector<std::unique_ptr<client::GenerationStream>> streams;
  for (const auto& [prompt, max_tokens] : requests) {
    streams.push_back(cluster.client().StartGenerate(TokenRequest(prompt, max_tokens)));
  }
  std::vector<std::vector<int32_t>> got(streams.size());
  for (size_t i = 0; i < streams.size(); ++i) {  // every stream is under way
    xpd::v1::GenerateResponse response;
    ASSERT_TRUE(streams[i]->Next(&response));
    got[i].insert(got[i].end(), response.token_ids().begin(), response.token_ids().end());
  }
  absl::StatusOr<xpd::v1::RebalanceResponse> rebalance = Rebalance(cluster, false);
  ASSERT_TRUE(rebalance.ok()) << rebalance.status();
  EXPECT_EQ(rebalance->outcome(), "committed") << rebalance->reason();
  EXPECT_EQ(rebalance->epoch(), 1);
  EXPECT_LT(rebalance->predicted_balance(), rebalance->current_balance());
  for (size_t i = 0; i < streams.size(); ++i) {
    xpd::v1::GenerateResponse response;
    while (streams[i]->Next(&response)) {
      got[i].insert(got[i].end(), response.token_ids().begin(), response.token_ids().end());
    }
    EXPECT_TRUE(streams[i]->Finish().ok()) << "stream " << i;
    EXPECT_EQ(got[i], expected[i]) << "stream " << i;
  }
  // Every decode rank reports the new epoch with its next heartbeat.
  absl::StatusOr<xpd::v1::PlacementStatusResponse> status;
  int on_new_epoch = 0;
  for (int i = 0; i < 200 && on_new_epoch < 2; ++i) {
    status = PlacementStatus(cluster);
    ASSERT_TRUE(status.ok());
    on_new_epoch = 0;
    for (const xpd::v1::RankInfo& rank : status->ranks()) {
      on_new_epoch += rank.role() == xpd::v1::ROLE_DECODE && rank.placement_epoch() == 1;
    }
    if (on_new_epoch < 2) absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(status->placement().epoch(), 1);
  EXPECT_EQ(on_new_epoch, 2);
  ExpectSameAsEngine(cluster, RandomRequests(6, 3, 30, 12));
  EXPECT_TRUE(cluster.Stop().empty());
}

// A skewed workload makes the controller rebalance on its own, the balance
// of the measured load improves, and a controller restart restores the
// placement from its file; while it is down, serving goes on.
TEST(ExpertParallelRebalanceTest, SkewDrivesAutomaticRebalanceAndControllerRestartRestores) {
  LocalCluster cluster(
      {.model = kModel,
       .decode_ranks = 2,
       .controller_args = {"--redundant-experts", "2", "--placement-file",
                           TempPlacementFile("auto.json"), "--rebalance", "auto",
                           "--rebalance-interval-ms", "200", "--rebalance-min-interval-ms", "0",
                           "--rebalance-trigger", "1.0"}});
  ASSERT_TRUE(cluster.Start().ok());
  absl::StatusOr<xpd::v1::PlacementStatusResponse> status;
  for (int round = 0; round < 60; ++round) {  // bounded: each round is real traffic
    ExpectSameAsEngine(cluster, SkewedRequests(4, 16));
    status = PlacementStatus(cluster);
    ASSERT_TRUE(status.ok());
    if (status->placement().epoch() >= 1) break;
  }
  ASSERT_GE(status->placement().epoch(), 1) << "the controller never rebalanced";
  const xpd::v1::RebalanceRecord rollout = status->last_rebalance();
  EXPECT_EQ(rollout.outcome(), "committed");
  EXPECT_GT(rollout.balance_before(), 1.0);
  EXPECT_LT(rollout.balance_predicted(), rollout.balance_before());
  // More skewed traffic on the new placement: the balance the controller
  // measures over its window is better than what triggered the rollout.
  ExpectSameAsEngine(cluster, SkewedRequests(8, 16));
  status = PlacementStatus(cluster);
  ASSERT_TRUE(status.ok());
  EXPECT_LT(status->balance(), rollout.balance_before());
  const int64_t epoch = status->placement().epoch();

  cluster.KillController();
  ExpectSameAsEngine(cluster, SkewedRequests(4, 16));  // serving never waits on it
  ASSERT_TRUE(cluster.RestartController().ok());
  absl::StatusOr<xpd::v1::PlacementStatusResponse> restored = PlacementStatus(cluster);
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ(restored->placement().SerializeAsString(), status->placement().SerializeAsString());
  EXPECT_EQ(restored->placement().epoch(), epoch);
  ExpectSameAsEngine(cluster, RandomRequests(4, 9, 20, 8));
  // Only the controller that was killed did not exit cleanly.
  EXPECT_EQ(cluster.Stop(), std::vector<std::string>{"controller: killed by signal 9"});
}

// A rank without spare expert memory cannot prepare: the rollout aborts and
// the old placement keeps serving.
TEST(ExpertParallelRebalanceTest, RankThatCannotPrepareAbortsTheRollout) {
  LocalCluster cluster({.model = kModel,
                        .decode_ranks = 2,
                        .controller_args = {"--redundant-experts", "2"},
                        .decode_args = {{}, {"--spare-expert-bytes", "0"}}});
  ASSERT_TRUE(cluster.Start().ok());
  ExpectSameAsEngine(cluster, SkewedRequests(4, 8));
  AwaitLoadReports(cluster);
  absl::StatusOr<xpd::v1::RebalanceResponse> rebalance = Rebalance(cluster, false);
  ASSERT_TRUE(rebalance.ok()) << rebalance.status();
  EXPECT_EQ(rebalance->outcome(), "aborted");
  EXPECT_NE(rebalance->reason().find("spare expert memory"), std::string::npos)
      << rebalance->reason();
  absl::StatusOr<xpd::v1::PlacementStatusResponse> status = PlacementStatus(cluster);
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->placement().epoch(), 0);
  ExpectSameAsEngine(cluster, RandomRequests(6, 5, 30, 12));
  EXPECT_TRUE(cluster.Stop().empty());
}

}  // namespace
}  // namespace xpd::testing
