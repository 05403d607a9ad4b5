// The load observations the balancer and its policy consume: per MoE layer
// and logical expert, how much routed work the expert received over a window
// (tokens routed to it, or any quantity proportional to its compute time).
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "common/placement/expert_placement.h"

namespace xpd::placement {

// [moe layer][logical expert], rows in the order of ExpertPlacement::layers.
using ExpertLoads = std::vector<std::vector<double>>;

// INVALID_ARGUMENT naming `argument` and the first offending index unless
// every value is finite and >= 0: a NaN would make every comparison in the
// balancer false and silently scramble its greedy choices.
absl::Status ValidateLoadValues(absl::Span<const double> values, const char* argument);

// INVALID_ARGUMENT unless `loads` has one row per MoE layer of `placement`,
// each of num_experts valid values.
absl::Status ValidateLoads(const ExpertPlacement& placement, const ExpertLoads& loads);

}  // namespace xpd::placement
