// The controller's durable EP group state: per group the current placement,
// so that a restarted controller hands ranks the placement they serve
// instead of a fresh initial one, plus what the rebalancer needs across
// restarts (expert size, last rollout). One JSON document:
//   {"version": 1,
//    "groups": {"<ep_group>": {"placement": {<PlacementToJson>},
//                              "expert_bytes": N,
//                              "last_rollout_unix_ms": N,          (optional)
//                              "last_rebalance": {<record>}}}}     (optional)
// Where it lives is a PlacementStore: a local file (`--placement-file`, this
// header) or a Kubernetes ConfigMap (`--placement-configmap`,
// configmap_placement_store.h); both hold this same document.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>

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

// Where the manager loads its state at start and saves it after every change.
// Calls are serialized by the caller (the manager's lock).
class PlacementStore {
 public:
  virtual ~PlacementStore() = default;
  // The state to start from; an empty one when nothing was saved yet.
  // FAILED_PRECONDITION naming the store and the reason when it cannot be
  // read or is malformed: starting empty would hand ranks a placement that
  // disagrees with the one they serve.
  virtual absl::StatusOr<StoredGroups> Load() = 0;
  // Replaces the saved state; UNAVAILABLE naming the store on failure.
  virtual absl::Status Save(const StoredGroups& groups) = 0;
};

// A missing file is an empty state (first start); an unreadable or malformed
// one is an error naming `path` and the reason.
absl::StatusOr<StoredGroups> LoadPlacementFile(const std::string& path);
// Replaces the file atomically (temp file + fsync + rename), so a crash
// leaves either the old or the new document, never a torn one.
absl::Status SavePlacementFile(const std::string& path, const StoredGroups& groups);

class FilePlacementStore final : public PlacementStore {
 public:
  explicit FilePlacementStore(std::string path) : path_(std::move(path)) {}
  absl::StatusOr<StoredGroups> Load() override { return LoadPlacementFile(path_); }
  absl::Status Save(const StoredGroups& groups) override {
    return SavePlacementFile(path_, groups);
  }

 private:
  const std::string path_;
};

}  // namespace xpd::controller
