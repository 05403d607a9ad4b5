#include "common/placement/rebalance_policy.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/placement/balance.h"
#include "common/placement/eplb.h"

namespace xpd::placement {
namespace {

absl::Status ValidatePolicy(const RebalancePolicy& p) {
  if (!(p.min_gain >= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy.min_gain = ", p.min_gain, " must be >= 0"));
  }
  if (std::isnan(p.trigger_balance)) {
    return absl::InvalidArgumentError("policy.trigger_balance is NaN");
  }
  if (p.min_interval < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "policy.min_interval = ", absl::FormatDuration(p.min_interval), " must be >= 0"));
  }
  if (p.max_bytes_per_rollout < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy.max_bytes_per_rollout = ", p.max_bytes_per_rollout, " must be >= 0"));
  }
  if (p.expert_bytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy.expert_bytes = ", p.expert_bytes, " must be >= 0"));
  }
  return absl::OkStatus();
}

// BytesToMove works on whole placements; one layer of each isolates the cost
// of rolling out just that layer.
ExpertPlacement LayerOf(const ExpertPlacement& p, size_t layer) {
  return ExpertPlacement{.epoch = p.epoch,
                         .num_ranks = p.num_ranks,
                         .num_experts = p.num_experts,
                         .slots_per_layer = p.slots_per_layer,
                         .layers = {p.layers[layer]},
                         .phy2log = {p.phy2log[layer]}};
}

struct LayerGain {
  size_t layer;
  double gain;  // drop in the busiest rank's load
  int64_t bytes;
};

}  // namespace

absl::StatusOr<RebalancePlan> PlanRebalance(const ExpertPlacement& current,
                                            const ExpertLoads& loads,
                                            const BalancerParams& balancer,
                                            const RebalancePolicy& policy,
                                            absl::Duration since_last_rollout) {
  if (absl::Status s = ValidatePolicy(policy); !s.ok()) return s;
  absl::StatusOr<PlacementBalance> now = EvaluateBalance(current, loads);
  if (!now.ok()) return now.status();
  RebalancePlan plan;
  plan.proposed = current;
  plan.current_balance = plan.predicted_balance = now->overall;
  plan.current_layer_balance = plan.predicted_layer_balance = now->layer_balance;
  double sum_mean = 0;
  for (const double mean : now->layer_mean_load) sum_mean += mean;
  if (sum_mean == 0) {
    plan.reason = "no load observed: every expert load is zero";
    return plan;
  }

  absl::StatusOr<ExpertPlacement> full =
      BalancedPlacement(current, loads, balancer.num_groups, balancer.num_nodes);
  if (!full.ok()) return full.status();
  absl::StatusOr<PlacementBalance> next = EvaluateBalance(*full, loads);
  if (!next.ok()) return next.status();

  std::vector<LayerGain> candidates;
  for (size_t l = 0; l < current.layers.size(); ++l) {
    const double gain = now->layer_max_load[l] - next->layer_max_load[l];
    if (gain <= 0) continue;
    candidates.push_back(
        {l, gain, BytesToMove(LayerOf(current, l), LayerOf(*full, l), policy.expert_bytes)});
  }
  // gain/bytes descending, compared cross-multiplied so that free layers
  // (bytes == 0) come first without dividing by zero.
  std::sort(candidates.begin(), candidates.end(), [](const LayerGain& a, const LayerGain& b) {
    const double lhs = a.gain * static_cast<double>(b.bytes);
    const double rhs = b.gain * static_cast<double>(a.bytes);
    return lhs > rhs || (lhs == rhs && a.layer < b.layer);
  });

  plan.proposed.epoch = current.epoch + 1;
  std::vector<double> max_load = now->layer_max_load;
  int64_t moved = 0;
  size_t taken = 0;
  int64_t cheapest_skipped = -1;
  for (const LayerGain& c : candidates) {
    if (c.bytes > policy.max_bytes_per_rollout - moved) {
      if (cheapest_skipped < 0 || c.bytes < cheapest_skipped) cheapest_skipped = c.bytes;
      continue;
    }
    plan.proposed.phy2log[c.layer] = full->phy2log[c.layer];
    plan.predicted_layer_balance[c.layer] = next->layer_balance[c.layer];
    max_load[c.layer] = next->layer_max_load[c.layer];
    moved += c.bytes;
    ++taken;
  }
  double sum_max = 0;
  for (const double m : max_load) sum_max += m;
  plan.predicted_balance = sum_max / sum_mean;
  plan.bytes_to_move = moved;

  if (!policy.force && plan.current_balance < policy.trigger_balance) {
    plan.reason = absl::StrFormat("current balance %.4f is below trigger_balance %.4f",
                                  plan.current_balance, policy.trigger_balance);
    return plan;
  }
  if (!policy.force && since_last_rollout < policy.min_interval) {
    plan.reason =
        absl::StrCat("last rollout ", absl::FormatDuration(since_last_rollout),
                     " ago, within min_interval ", absl::FormatDuration(policy.min_interval));
    return plan;
  }
  if (taken == 0) {
    plan.reason = candidates.empty()
                      ? "the balancer lightens no layer's busiest rank"
                      : absl::StrCat("no improving layer fits max_bytes_per_rollout ",
                                     policy.max_bytes_per_rollout, " (the cheapest moves ",
                                     cheapest_skipped, " bytes)");
    return plan;
  }
  const double gain = (plan.current_balance - plan.predicted_balance) / plan.current_balance;
  if (!policy.force && gain < policy.min_gain) {
    plan.reason = absl::StrFormat(
        "predicted balance %.4f improves on %.4f by %.2f%%, less than min_gain %.2f%%",
        plan.predicted_balance, plan.current_balance, 100 * gain, 100 * policy.min_gain);
    return plan;
  }
  plan.rebalance = true;
  plan.reason = absl::StrFormat("%sbalance %.4f -> %.4f rolling out %d of %d layers, %d bytes",
                                policy.force ? "forced: " : "", plan.current_balance,
                                plan.predicted_balance, taken, current.layers.size(), moved);
  if (taken < candidates.size()) {
    absl::StrAppend(&plan.reason, "; ", candidates.size() - taken,
                    " improving layers left out by max_bytes_per_rollout");
  }
  return plan;
}

}  // namespace xpd::placement
