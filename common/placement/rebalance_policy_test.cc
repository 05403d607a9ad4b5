#include "common/placement/rebalance_policy.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "common/placement/balance.h"
#include "common/placement/eplb.h"
#include "common/placement/expert_placement.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace xpd::placement {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// DeepSeek-V3's prefill unit: 256 experts in 8 groups, 288 slots on 32 ranks
// over 4 nodes; a dozen MoE layers keep the tests quick.
constexpr int32_t kRanks = 32, kExperts = 256, kSlots = 288, kLayers = 12;
constexpr BalancerParams kBalancer{.num_groups = 8, .num_nodes = 4};
constexpr int64_t kExpertBytes = 44'050'944;  // FP8 gate/up/down + block scales

ExpertPlacement ColdStart() {
  std::vector<int32_t> layers(kLayers);
  std::iota(layers.begin(), layers.end(), 3);
  return InitialPlacement(kRanks, kExperts, kSlots - kExperts, layers);
}

// Zipf-like popularity over a random ranking of the experts, per layer.
ExpertLoads SkewedLoads(uint64_t seed) {
  std::mt19937_64 gen(seed);
  ExpertLoads loads(kLayers, std::vector<double>(kExperts));
  for (std::vector<double>& row : loads) {
    std::vector<int32_t> rank(kExperts);
    std::iota(rank.begin(), rank.end(), 0);
    for (int32_t i = kExperts - 1; i > 0; --i) std::swap(rank[i], rank[gen() % (i + 1)]);
    for (int32_t e = 0; e < kExperts; ++e) row[e] = std::round(1e5 / std::pow(rank[e] + 1, 1.1));
  }
  return loads;
}

RebalancePolicy Lenient() {
  return RebalancePolicy{.min_gain = 0.05,
                         .trigger_balance = 1.10,
                         .min_interval = absl::Minutes(10),
                         .expert_bytes = kExpertBytes};
}

absl::StatusOr<RebalancePlan> Plan(const RebalancePolicy& policy,
                                   absl::Duration since = absl::InfiniteDuration(),
                                   const ExpertLoads& loads = SkewedLoads(1)) {
  return PlanRebalance(ColdStart(), loads, kBalancer, policy, since);
}

TEST(RebalancePolicyTest, RebalancesASkewedLoad) {
  const ExpertPlacement current = ColdStart();
  const ExpertLoads loads = SkewedLoads(1);
  absl::StatusOr<RebalancePlan> plan =
      PlanRebalance(current, loads, kBalancer, Lenient(), absl::InfiniteDuration());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_TRUE(plan->rebalance) << plan->reason;
  EXPECT_LT(plan->predicted_balance, plan->current_balance * 0.95);
  ASSERT_TRUE(ValidatePlacement(plan->proposed).ok());
  EXPECT_EQ(plan->proposed.epoch, current.epoch + 1);
  EXPECT_EQ(plan->bytes_to_move, BytesToMove(current, plan->proposed, kExpertBytes));
  EXPECT_GT(plan->bytes_to_move, 0);

  absl::StatusOr<PlacementBalance> before = EvaluateBalance(current, loads);
  absl::StatusOr<PlacementBalance> after = EvaluateBalance(plan->proposed, loads);
  ASSERT_TRUE(before.ok() && after.ok());
  EXPECT_DOUBLE_EQ(plan->current_balance, before->overall);
  EXPECT_DOUBLE_EQ(plan->predicted_balance, after->overall);
  EXPECT_EQ(plan->current_layer_balance, before->layer_balance);
  EXPECT_EQ(plan->predicted_layer_balance, after->layer_balance);
}

TEST(RebalancePolicyTest, BelowTriggerDeclines) {
  absl::StatusOr<RebalancePlan> lenient = Plan(Lenient());
  ASSERT_TRUE(lenient.ok()) << lenient.status();
  RebalancePolicy policy = Lenient();
  policy.trigger_balance = lenient->current_balance + 0.01;
  absl::StatusOr<RebalancePlan> plan = Plan(policy);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_FALSE(plan->rebalance);
  EXPECT_THAT(plan->reason, HasSubstr("trigger_balance"));
  // The declined plan is still reported.
  EXPECT_DOUBLE_EQ(plan->predicted_balance, lenient->predicted_balance);
}

TEST(RebalancePolicyTest, WithinMinIntervalDeclines) {
  absl::StatusOr<RebalancePlan> plan = Plan(Lenient(), absl::Minutes(9));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_FALSE(plan->rebalance);
  EXPECT_THAT(plan->reason, HasSubstr("min_interval"));
  plan = Plan(Lenient(), absl::Minutes(10));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_TRUE(plan->rebalance) << plan->reason;
}

TEST(RebalancePolicyTest, GainBelowMinGainDeclines) {
  absl::StatusOr<RebalancePlan> lenient = Plan(Lenient());
  ASSERT_TRUE(lenient.ok()) << lenient.status();
  const double gain =
      (lenient->current_balance - lenient->predicted_balance) / lenient->current_balance;
  RebalancePolicy policy = Lenient();
  policy.min_gain = gain + 0.01;
  absl::StatusOr<RebalancePlan> plan = Plan(policy);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_FALSE(plan->rebalance);
  EXPECT_THAT(plan->reason, HasSubstr("min_gain"));
  policy.min_gain = gain - 0.01;
  plan = Plan(policy);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_TRUE(plan->rebalance) << plan->reason;
}

TEST(RebalancePolicyTest, ForceSkipsTriggerIntervalAndGain) {
  RebalancePolicy policy = Lenient();
  policy.trigger_balance = 100;
  policy.min_gain = 0.99;
  policy.force = true;
  absl::StatusOr<RebalancePlan> plan = Plan(policy, absl::ZeroDuration());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_TRUE(plan->rebalance) << plan->reason;
  EXPECT_THAT(plan->reason, HasSubstr("forced"));
  EXPECT_LT(plan->predicted_balance, plan->current_balance);
}

// Independent re-statement of the cap rule: layers whose busiest rank gets
// lighter, by gain per byte, each taken if it still fits.
std::vector<bool> ExpectedLayers(const ExpertPlacement& current, const ExpertPlacement& full,
                                 const ExpertLoads& loads, int64_t cap) {
  const PlacementBalance before = *EvaluateBalance(current, loads);
  const PlacementBalance after = *EvaluateBalance(full, loads);
  struct Layer {
    size_t index;
    double gain;
    int64_t bytes;
  };
  std::vector<Layer> layers;
  for (size_t l = 0; l < current.layers.size(); ++l) {
    ExpertPlacement from = current, to = full;
    from.layers = to.layers = {current.layers[l]};
    from.phy2log = {current.phy2log[l]};
    to.phy2log = {full.phy2log[l]};
    const double gain = before.layer_max_load[l] - after.layer_max_load[l];
    if (gain > 0) layers.push_back({l, gain, BytesToMove(from, to, kExpertBytes)});
  }
  std::stable_sort(layers.begin(), layers.end(), [](const Layer& a, const Layer& b) {
    return a.gain / a.bytes > b.gain / b.bytes;
  });
  std::vector<bool> taken(current.layers.size(), false);
  for (const Layer& layer : layers) {
    if (layer.bytes <= cap) {
      taken[layer.index] = true;
      cap -= layer.bytes;
    }
  }
  return taken;
}

TEST(RebalancePolicyTest, ByteCapRollsOutTheBestLayersPerByte) {
  const ExpertPlacement current = ColdStart();
  const ExpertLoads loads = SkewedLoads(2);
  absl::StatusOr<RebalancePlan> full = Plan(Lenient(), absl::InfiniteDuration(), loads);
  ASSERT_TRUE(full.ok()) << full.status();
  ASSERT_TRUE(full->rebalance) << full->reason;

  RebalancePolicy policy = Lenient();
  policy.min_gain = 0;
  policy.max_bytes_per_rollout = full->bytes_to_move / 3;
  absl::StatusOr<RebalancePlan> capped = Plan(policy, absl::InfiniteDuration(), loads);
  ASSERT_TRUE(capped.ok()) << capped.status();
  EXPECT_TRUE(capped->rebalance) << capped->reason;
  EXPECT_THAT(capped->reason, HasSubstr("left out"));
  EXPECT_GT(capped->bytes_to_move, 0);
  EXPECT_LE(capped->bytes_to_move, policy.max_bytes_per_rollout);
  EXPECT_EQ(capped->bytes_to_move, BytesToMove(current, capped->proposed, kExpertBytes));
  EXPECT_GT(capped->predicted_balance, full->predicted_balance);
  EXPECT_LT(capped->predicted_balance, capped->current_balance);
  absl::StatusOr<PlacementBalance> partial = EvaluateBalance(capped->proposed, loads);
  ASSERT_TRUE(partial.ok()) << partial.status();
  EXPECT_DOUBLE_EQ(capped->predicted_balance, partial->overall);
  EXPECT_EQ(capped->predicted_layer_balance, partial->layer_balance);

  const std::vector<bool> expected =
      ExpectedLayers(current, full->proposed, loads, policy.max_bytes_per_rollout);
  for (size_t l = 0; l < current.layers.size(); ++l) {
    EXPECT_EQ(capped->proposed.phy2log[l],
              expected[l] ? full->proposed.phy2log[l] : current.phy2log[l])
        << "layer " << l;
  }

  // Forced, with a cap below any layer's cost: nothing can be rolled out.
  policy.force = true;
  policy.max_bytes_per_rollout = kExpertBytes;
  absl::StatusOr<RebalancePlan> tiny = Plan(policy, absl::InfiniteDuration(), loads);
  ASSERT_TRUE(tiny.ok()) << tiny.status();
  EXPECT_FALSE(tiny->rebalance);
  EXPECT_THAT(tiny->reason, HasSubstr("max_bytes_per_rollout"));
  EXPECT_EQ(tiny->bytes_to_move, 0);
}

// Layer 3's load is the case where EPLB's greedy packing is worse than the
// cold-start layout (max rank 3.5 vs 3, see eplb_test.cc); layer 4 is spec
// §7.1's worked example, where it is much better (95 vs 145).
TEST(RebalancePolicyTest, KeepsLayersTheBalancerWouldMakeWorse) {
  const ExpertPlacement current = InitialPlacement(4, 8, 4, {3, 4});
  const ExpertLoads loads = {{2, 1, 3, 0, 3, 0, 0, 0}, {10, 20, 30, 40, 50, 70, 60, 80}};
  RebalancePolicy policy = Lenient();
  policy.force = true;
  absl::StatusOr<RebalancePlan> plan =
      PlanRebalance(current, loads, BalancerParams{.num_groups = 4, .num_nodes = 2}, policy,
                    absl::InfiniteDuration());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_TRUE(plan->rebalance) << plan->reason;
  EXPECT_EQ(plan->proposed.phy2log[0], current.phy2log[0]);
  EXPECT_THAT(plan->proposed.phy2log[1], ElementsAre(7, 6, 1, 7, 6, 0, 3, 2, 4, 5, 5, 4));
  EXPECT_DOUBLE_EQ(plan->predicted_layer_balance[0], plan->current_layer_balance[0]);
  EXPECT_DOUBLE_EQ(plan->predicted_layer_balance[1], 95 / 90.0);
}

TEST(RebalancePolicyTest, ZeroLoadNeverRebalances) {
  RebalancePolicy policy = Lenient();
  policy.force = true;
  const ExpertPlacement current = ColdStart();
  absl::StatusOr<RebalancePlan> plan =
      PlanRebalance(current, ExpertLoads(kLayers, std::vector<double>(kExperts, 0.0)), kBalancer,
                    policy, absl::InfiniteDuration());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_FALSE(plan->rebalance);
  EXPECT_THAT(plan->reason, HasSubstr("no load"));
  EXPECT_EQ(plan->proposed.phy2log, current.phy2log);
  EXPECT_EQ(plan->proposed.epoch, current.epoch);
  EXPECT_EQ(plan->bytes_to_move, 0);
  EXPECT_DOUBLE_EQ(plan->current_balance, 1.0);
}

TEST(RebalancePolicyTest, NothingToImproveDeclinesEvenWhenForced) {
  RebalancePolicy policy = Lenient();
  policy.force = true;
  absl::StatusOr<RebalancePlan> plan =
      PlanRebalance(InitialPlacement(4, 8, 0, {3}), {{5, 5, 5, 5, 5, 5, 5, 5}}, BalancerParams{},
                    policy, absl::InfiniteDuration());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_FALSE(plan->rebalance);
  EXPECT_THAT(plan->reason, HasSubstr("no layer"));
  EXPECT_DOUBLE_EQ(plan->predicted_balance, 1.0);
}

TEST(RebalancePolicyTest, InvalidArgumentsAreNamed) {
  struct Case {
    RebalancePolicy policy;
    std::string field;
  };
  std::vector<Case> cases(5, Case{Lenient(), ""});
  cases[0].policy.min_gain = -0.1;
  cases[0].field = "policy.min_gain";
  cases[1].policy.trigger_balance = NAN;
  cases[1].field = "policy.trigger_balance";
  cases[2].policy.min_interval = -absl::Seconds(1);
  cases[2].field = "policy.min_interval";
  cases[3].policy.max_bytes_per_rollout = -1;
  cases[3].field = "policy.max_bytes_per_rollout";
  cases[4].policy.expert_bytes = -1;
  cases[4].field = "policy.expert_bytes";
  for (const Case& c : cases) {
    absl::StatusOr<RebalancePlan> plan = Plan(c.policy);
    EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_THAT(std::string(plan.status().message()), HasSubstr(c.field));
  }
  absl::StatusOr<RebalancePlan> plan =
      PlanRebalance(ColdStart(), SkewedLoads(1), BalancerParams{.num_groups = 3, .num_nodes = 1},
                    Lenient(), absl::InfiniteDuration());
  EXPECT_THAT(std::string(plan.status().message()), HasSubstr("num_groups"));
  plan = PlanRebalance(ColdStart(), {{1.0}}, kBalancer, Lenient(), absl::InfiniteDuration());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace xpd::placement
