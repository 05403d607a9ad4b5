// Whether rolling out a rebalanced placement pays for itself: a rollout
// copies expert weights between ranks and disturbs serving, so it is only
// worth it when the current placement is clearly unbalanced, the balancer's
// plan clearly better, and the last rollout not too recent; and when the
// whole plan would move too many bytes, only the layers that gain most per
// byte are rolled out.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/placement/expert_loads.h"
#include "common/placement/expert_placement.h"

namespace xpd::placement {

// Parameters of the balancer (RebalanceExperts); the ranks and slots come
// from the current placement.
struct BalancerParams {
  int32_t num_groups = 1;
  int32_t num_nodes = 1;
};

struct RebalancePolicy {
  // The predicted overall balance must be lower than the current one by at
  // least this fraction of it (0.05: 1.30 must drop to 1.235 or below).
  double min_gain = 0.05;
  // Only consider rebalancing while the current overall balance is at least
  // this.
  double trigger_balance = 1.10;
  // Hysteresis: no rollout within this long of the previous one.
  absl::Duration min_interval = absl::Minutes(10);
  // Cap on the expert weights one rollout may copy; see BytesToMove.
  int64_t max_bytes_per_rollout = std::numeric_limits<int64_t>::max();
  // Size of one routed expert's weights, as in BytesToMove.
  int64_t expert_bytes = 0;
  // Skip the trigger, interval and gain checks (an operator's request); the
  // byte cap still applies.
  bool force = false;
};

struct RebalancePlan {
  bool rebalance = false;
  std::string reason;  // why, or why not, for logs and the operator
  // The placement to roll out: the balancer's rows for the layers it improves
  // and that fit the byte cap, the current rows elsewhere; epoch + 1. Filled
  // even when `rebalance` is false, so that a declined plan can be logged; it
  // equals `current` when there is no load.
  ExpertPlacement proposed;
  double current_balance = 1.0;    // overall, see PlacementBalance
  double predicted_balance = 1.0;  // overall under `proposed`
  int64_t bytes_to_move = 0;       // BytesToMove(current, proposed)
  std::vector<double> current_layer_balance, predicted_layer_balance;
};

// Layers are taken from the balancer's full plan in descending order of the
// drop in their busiest rank's load per byte moved (layers that move nothing
// first, then by MoE index); a layer that does not fit in what remains of
// the cap is skipped and smaller ones are still tried. Layers whose busiest
// rank would not get lighter are never taken: they would cost bytes for no
// shorter step. INVALID_ARGUMENT for an invalid placement, loads, balancer
// parameters or policy (negative byte counts or interval, NaN thresholds).
// `since_last_rollout` is absl::InfiniteDuration() when there was none.
absl::StatusOr<RebalancePlan> PlanRebalance(const ExpertPlacement& current,
                                            const ExpertLoads& loads,
                                            const BalancerParams& balancer,
                                            const RebalancePolicy& policy,
                                            absl::Duration since_last_rollout);

}  // namespace xpd::placement
