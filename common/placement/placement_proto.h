// ExpertPlacement <-> xpd.v1.Placement, for the controller, the ranks and
// the CLI.
#pragma once

#include "absl/status/statusor.h"
#include "common/placement/expert_placement.h"
#include "xpd/v1/cluster.pb.h"

namespace xpd::placement {

xpd::v1::Placement ToProto(const ExpertPlacement& placement);
// INVALID_ARGUMENT (from ValidatePlacement) when the message is not a valid placement.
absl::StatusOr<ExpertPlacement> FromProto(const xpd::v1::Placement& proto);

}  // namespace xpd::placement
