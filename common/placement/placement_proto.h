// ExpertPlacement <-> xpd.v1.Placement, and rebalance records as JSON, for
// the controller, the ranks and the CLI.
#pragma once

#include "absl/status/statusor.h"
#include "common/placement/expert_placement.h"
#include "nlohmann/json.hpp"
#include "xpd/v1/cluster.pb.h"

namespace xpd::placement {

xpd::v1::Placement ToProto(const ExpertPlacement& placement);
// INVALID_ARGUMENT (from ValidatePlacement) when the message is not a valid placement.
absl::StatusOr<ExpertPlacement> FromProto(const xpd::v1::Placement& proto);

// A rebalance record as JSON, the one form the controller persists and
// `xpd status --format json` prints. Missing fields read as zero/empty;
// INVALID_ARGUMENT for a non-object or a field of the wrong type.
nlohmann::json RebalanceRecordToJson(const xpd::v1::RebalanceRecord& record);
absl::StatusOr<xpd::v1::RebalanceRecord> RebalanceRecordFromJson(const nlohmann::json& json);

}  // namespace xpd::placement
