#include "services/controller/placement_store.h"

#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace xpd::controller {
namespace {

using ::testing::HasSubstr;

std::string TempFile(const std::string& name) {
  const auto dir = std::filesystem::path(::testing::TempDir()) / "placement_store_test";
  std::filesystem::create_directories(dir);
  const auto path = dir / name;
  std::filesystem::remove(path);
  return path.string();
}

StoredGroups Sample() {
  StoredGroup group{.placement = placement::InitialPlacement(2, 4, 2, {1, 3}),
                    .expert_bytes = 4096,
                    .last_rollout = absl::FromUnixMillis(1'700'000'000'123)};
  group.placement.epoch = 7;
  group.placement.phy2log[1] = {3, 2, 1, 0, 3, 3};
  xpd::v1::RebalanceRecord record;
  record.set_epoch(7);
  record.set_outcome("committed");
  record.set_reason("forced: balance 1.5 -> 1.0");
  record.set_bytes_moved(8192);
  record.set_duration_seconds(1.25);
  record.set_unix_ms(1'700'000'000'123);
  group.last_rebalance = record;
  return {{"decode", group}, {"other", {.placement = placement::InitialPlacement(1, 2, 0, {})}}};
}

void ExpectSame(const StoredGroups& got, const StoredGroups& want) {
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [name, group] : want) {
    ASSERT_TRUE(got.contains(name)) << name;
    const StoredGroup& g = got.at(name);
    EXPECT_EQ(placement::PlacementToJson(g.placement), placement::PlacementToJson(group.placement));
    EXPECT_EQ(g.expert_bytes, group.expert_bytes);
    EXPECT_EQ(g.last_rollout, group.last_rollout);
    ASSERT_EQ(g.last_rebalance.has_value(), group.last_rebalance.has_value());
    if (group.last_rebalance) {
      EXPECT_EQ(g.last_rebalance->SerializeAsString(), group.last_rebalance->SerializeAsString());
    }
  }
}

TEST(PlacementStoreTest, SaveThenLoadRoundTrips) {
  const std::string path = TempFile("roundtrip.json");
  ASSERT_TRUE(SavePlacementFile(path, Sample()).ok());
  absl::StatusOr<StoredGroups> loaded = LoadPlacementFile(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectSame(*loaded, Sample());
  // No temp file left next to it.
  int files = 0;
  for (const auto& entry :
       std::filesystem::directory_iterator(std::filesystem::path(path).parent_path())) {
    files += entry.path().filename().string().rfind("roundtrip.json", 0) == 0;
  }
  EXPECT_EQ(files, 1);
}

TEST(PlacementStoreTest, MissingFileIsAnEmptyState) {
  absl::StatusOr<StoredGroups> loaded = LoadPlacementFile(TempFile("absent.json"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(loaded->empty());
}

TEST(PlacementStoreTest, CorruptFileNamesTheFileAndTheProblem) {
  const std::string path = TempFile("corrupt.json");
  std::ofstream(path) << "{\"groups\": {\"decode\": {\"placement\": {\"epoch\": 1}}}}";
  absl::StatusOr<StoredGroups> loaded = LoadPlacementFile(path);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(loaded.status().message(), HasSubstr(path));
  EXPECT_THAT(loaded.status().message(), HasSubstr("groups[\"decode\"]"));
  EXPECT_THAT(loaded.status().message(), HasSubstr("num_ranks"));

  std::ofstream(path) << "not json";
  loaded = LoadPlacementFile(path);
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.status().message(), HasSubstr("not a JSON object"));
}

TEST(PlacementStoreTest, InvalidPlacementIsRejected) {
  StoredGroups groups = Sample();
  groups["decode"].placement.phy2log[0] = {0, 0, 0, 0, 0, 0};  // experts 1..3 have no slot
  absl::StatusOr<StoredGroups> parsed = StoredGroupsFromJson(StoredGroupsToJson(groups));
  ASSERT_FALSE(parsed.ok());
  EXPECT_THAT(parsed.status().message(), HasSubstr("has no slot for expert 1"));
}

}  // namespace
}  // namespace xpd::controller
