// The controller's durable EP group state (`--placement-file`): per group the
// current placement, so that a restarted controller hands ranks the placement
// they serve instead of a fresh initial one, plus what the rebalancer needs
// across restarts (expert size, last rollout). One JSON document:
//   {"version": 1,
//    "groups": {"<ep_group>": {"placement": {<PlacementToJson>},
//                              "expert_bytes": N,
//                              "last_rollout_unix_ms": N,          (optional)
//                              "last_rebalance": {<record>}}}}     (optional)
// Saves replace the file atomically (temp file + fsync + rename), so a crash
// leaves either the old or the new document, never a torn one.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/placement/expert_placement.h"
#include "xpd/v1/cluster.pb.h"

namespace xpd::controller {

struct StoredGroup {
  placement::ExpertPlacement placement;
  int64_t expert_bytes = 0;                // from the shape; 0 = unknown
  std::optional<absl::Time> last_rollout;  // last committed rollout
  std::optional<xpd::v1::RebalanceRecord> last_rebalance;
};

using StoredGroups = std::map<std::string, StoredGroup>;

std::string StoredGroupsToJson(const StoredGroups& groups);
// INVALID_ARGUMENT naming the group and field on malformed input.
absl::StatusOr<StoredGroups> StoredGroupsFromJson(const std::string& json);

// A missing file is an empty state (first start); an unreadable or malformed
// one is an error naming `path` and the reason.
absl::StatusOr<StoredGroups> LoadPlacementFile(const std::string& path);
absl::Status SavePlacementFile(const std::string& path, const StoredGroups& groups);

}  // namespace xpd::controller
