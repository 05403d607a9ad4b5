#include "common/placement/balance.h"

#include <string>
#include <vector>

#include "common/placement/expert_placement.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace xpd::placement {
namespace {

using ::testing::DoubleEq;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// 2 ranks x 3 slots, 4 experts; expert 0 has two replicas in layer 0.
ExpertPlacement TwoLayers() {
  return ExpertPlacement{.num_ranks = 2,
                         .num_experts = 4,
                         .slots_per_layer = 6,
                         .layers = {3, 7},
                         .phy2log = {{0, 1, 2, 0, 3, 3}, {0, 1, 2, 3, 0, 1}}};
}

TEST(BalanceTest, HandComputedLayers) {
  // Layer 0: replicas 0:2, 1:1, 2:1, 3:2. Rank 0 = 8/2 + 2 + 4 = 10,
  // rank 1 = 8/2 + 6/2 + 6/2 = 10: perfectly balanced.
  // Layer 1: replicas 0:2, 1:2, 2:1, 3:1. Rank 0 = 10/2 + 4/2 + 0 = 7,
  // rank 1 = 1 + 10/2 + 4/2 = 8; mean 7.5, balance 8/7.5.
  const ExpertLoads loads = {{8, 2, 4, 6}, {10, 4, 0, 1}};
  absl::StatusOr<PlacementBalance> b = EvaluateBalance(TwoLayers(), loads);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_THAT(b->layer_max_load, ElementsAre(DoubleEq(10), DoubleEq(8)));
  EXPECT_THAT(b->layer_mean_load, ElementsAre(DoubleEq(10), DoubleEq(7.5)));
  EXPECT_THAT(b->layer_balance, ElementsAre(DoubleEq(1.0), DoubleEq(8 / 7.5)));
  EXPECT_THAT(b->rank_load, ElementsAre(DoubleEq(17), DoubleEq(18)));
  // (10 + 8) / (10 + 7.5): the slow layer weighs by its load, not as an
  // average of ratios (which would be (1 + 1.0667) / 2).
  EXPECT_DOUBLE_EQ(b->overall, 18 / 17.5);
}

TEST(BalanceTest, ZeroLoadLayerIsBalancedAndAddsNothing) {
  const ExpertLoads loads = {{0, 0, 0, 0}, {10, 4, 0, 1}};
  absl::StatusOr<PlacementBalance> b = EvaluateBalance(TwoLayers(), loads);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_DOUBLE_EQ(b->layer_balance[0], 1.0);
  EXPECT_DOUBLE_EQ(b->overall, 8 / 7.5);
}

TEST(BalanceTest, NoLoadAtAllIsBalanced) {
  absl::StatusOr<PlacementBalance> b = EvaluateBalance(TwoLayers(), {{0, 0, 0, 0}, {0, 0, 0, 0}});
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_DOUBLE_EQ(b->overall, 1.0);
  EXPECT_THAT(b->layer_balance, ElementsAre(1.0, 1.0));
  EXPECT_THAT(b->rank_load, ElementsAre(0.0, 0.0));
}

TEST(BalanceTest, AllLoadOnOneRank) {
  // Contiguous layout, 4 ranks of 2 experts: everything on rank 1 gives
  // max = total, mean = total / 4, balance = 4.
  const ExpertPlacement p = InitialPlacement(4, 8, 0, {3});
  absl::StatusOr<PlacementBalance> b = EvaluateBalance(p, {{0, 0, 5, 7, 0, 0, 0, 0}});
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_DOUBLE_EQ(b->overall, 4.0);
  EXPECT_THAT(b->rank_load, ElementsAre(0.0, 12.0, 0.0, 0.0));
}

TEST(BalanceTest, InvalidInputs) {
  const ExpertPlacement p = TwoLayers();
  absl::StatusOr<PlacementBalance> b = EvaluateBalance(p, {{1, 2, 3, 4}});
  EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(b.status().message()), HasSubstr("rows"));
  b = EvaluateBalance(p, {{1, 2, 3, 4}, {1, 2, 3}});
  EXPECT_THAT(std::string(b.status().message()), HasSubstr("row 1"));
  b = EvaluateBalance(p, {{1, 2, 3, 4}, {1, -2, 3, 4}});
  EXPECT_THAT(std::string(b.status().message()), HasSubstr("loads[1][1]"));
  ExpertPlacement broken = p;
  broken.phy2log[1][2] = 9;
  b = EvaluateBalance(broken, {{1, 2, 3, 4}, {1, 2, 3, 4}});
  EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace xpd::placement
