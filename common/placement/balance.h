// How evenly a placement spreads a load over the ranks of an expert-parallel
// group. Every MoE layer's step waits for its busiest rank, so the figure of
// merit is the busiest rank's load relative to the mean.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "common/placement/expert_loads.h"
#include "common/placement/expert_placement.h"

namespace xpd::placement {

struct PlacementBalance {
  // Sum over layers of the busiest rank's load / sum over layers of the mean
  // rank load: the factor by which MoE time exceeds perfect balance. 1.0 when
  // there is no load at all.
  double overall = 1.0;
  // Per MoE layer: busiest rank / mean rank (1.0 for a layer without load),
  // the busiest rank's load, and the mean rank load (the layer's total load /
  // num_ranks, the same under any placement).
  std::vector<double> layer_balance;
  std::vector<double> layer_max_load;
  std::vector<double> layer_mean_load;
  // [rank] load summed over the MoE layers.
  std::vector<double> rank_load;
};

// A slot carries its expert's load divided by the expert's replica count in
// that layer (requests are spread evenly over replicas); a rank carries the
// sum of its slots. INVALID_ARGUMENT if the placement or loads are invalid.
absl::StatusOr<PlacementBalance> EvaluateBalance(const ExpertPlacement& placement,
                                                 const ExpertLoads& loads);

}  // namespace xpd::placement
