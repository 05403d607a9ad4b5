#include "services/controller/expert_load_window.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace xpd::controller {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

xpd::v1::ExpertLoad Report(std::vector<int32_t> layers, std::vector<int64_t> tokens,
                           int32_t experts = 2) {
  xpd::v1::ExpertLoad load;
  load.set_num_experts(experts);
  load.mutable_layers()->Add(layers.begin(), layers.end());
  load.mutable_tokens()->Add(tokens.begin(), tokens.end());
  return load;
}

TEST(AlignExpertLoadTest, PlacesLayersInPlacementOrder) {
  const auto p = placement::InitialPlacement(1, 2, 0, {3, 5, 9});
  absl::StatusOr<std::vector<int64_t>> dense = AlignExpertLoad(p, Report({9, 3}, {1, 2, 3, 4}));
  ASSERT_TRUE(dense.ok()) << dense.status();
  EXPECT_THAT(*dense, ElementsAre(3, 4, 0, 0, 1, 2));
}

TEST(AlignExpertLoadTest, RejectsMalformedReports) {
  const auto p = placement::InitialPlacement(1, 2, 0, {3, 5});
  const auto message = [&](const xpd::v1::ExpertLoad& load) {
    absl::StatusOr<std::vector<int64_t>> dense = AlignExpertLoad(p, load);
    EXPECT_EQ(dense.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(dense.status().message());
  };
  EXPECT_THAT(message(Report({3}, {1, 2, 3}, 3)), HasSubstr("num_experts = 3"));
  EXPECT_THAT(message(Report({3}, {1, 2, 3})), HasSubstr("tokens has 3 values"));
  EXPECT_THAT(message(Report({4}, {1, 2})), HasSubstr("layers[0] = 4 is not a MoE layer"));
  EXPECT_THAT(message(Report({3, 3}, {1, 2, 1, 2})), HasSubstr("repeated"));
  EXPECT_THAT(message(Report({5}, {1, -2})), HasSubstr("tokens[1] = -2 is negative"));
}

TEST(ExpertLoadWindowTest, SumsReportsAndDropsThemOnceOlderThanTheWindow) {
  const absl::Time t0 = absl::FromUnixSeconds(1'000'000);
  ExpertLoadWindow window(/*num_moe_layers=*/1, /*num_experts=*/2, absl::Seconds(64));
  window.Add(t0, {1, 2});
  window.Add(t0 + absl::Seconds(30), {10, 20});
  EXPECT_EQ(window.total_tokens(), 33);
  EXPECT_THAT(window.Loads(), ElementsAre(ElementsAre(11.0, 22.0)));

  window.Expire(t0 + absl::Seconds(64));  // the first is exactly a window old: kept
  EXPECT_EQ(window.total_tokens(), 33);
  window.Expire(t0 + absl::Seconds(65));
  EXPECT_EQ(window.total_tokens(), 30);
  EXPECT_THAT(window.totals(), ElementsAre(10, 20));
  window.Expire(t0 + absl::Seconds(200));
  EXPECT_EQ(window.total_tokens(), 0);
  EXPECT_THAT(window.Loads(), ElementsAre(ElementsAre(0.0, 0.0)));
}

TEST(ExpertLoadWindowTest, MemoryIsBoundedByBuckets) {
  const absl::Time t0 = absl::FromUnixSeconds(1'000'000);
  ExpertLoadWindow window(1, 1, absl::Seconds(64));  // 1 s buckets
  // Many reports inside one bucket merge; the sum is exact.
  for (int i = 0; i < 1000; ++i) window.Add(t0 + absl::Milliseconds(i / 2), {1});
  EXPECT_EQ(window.total_tokens(), 1000);
  window.Expire(t0 + absl::Seconds(65));
  EXPECT_EQ(window.total_tokens(), 0);
}

}  // namespace
}  // namespace xpd::controller
