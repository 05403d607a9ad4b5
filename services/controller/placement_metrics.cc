#include "services/controller/placement_metrics.h"

#include <string>

namespace xpd::controller {
namespace {

// Rollouts load expert weights on every rank: from well under a second on
// small models to minutes for DeepSeek-V3 (the default rollout timeout is
// two minutes per phase).
const prometheus::Histogram::BucketBoundaries& RolloutBuckets() {
  static const auto* const buckets = new prometheus::Histogram::BucketBoundaries{
      0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
  return *buckets;
}

}  // namespace

PlacementMetrics::PlacementMetrics(prometheus::Registry* registry,
                                   const prometheus::Labels& labels) {
  if (registry == nullptr) return;
  balance_ = &prometheus::BuildGauge()
                  .Name("xpd_expert_balance_ratio")
                  .Help(
                      "Busiest rank's routed-expert load over the mean rank's, summed over MoE "
                      "layers, in the load window (1 = perfect balance).")
                  .Labels(labels)
                  .Register(*registry);
  layer_balance_ = &prometheus::BuildGauge()
                        .Name("xpd_expert_layer_balance_ratio")
                        .Help(
                            "Busiest rank's routed-expert load over the mean rank's per MoE "
                            "layer in the load window (1 = perfect balance).")
                        .Labels(labels)
                        .Register(*registry);
  window_tokens_ = &prometheus::BuildGauge()
                        .Name("xpd_expert_window_tokens")
                        .Help(
                            "Token-expert assignments reported by the EP group's ranks within "
                            "the load window, over all MoE layers.")
                        .Labels(labels)
                        .Register(*registry);
  epoch_ = &prometheus::BuildGauge()
                .Name("xpd_placement_epoch")
                .Help("Epoch of the EP group's current expert placement.")
                .Labels(labels)
                .Register(*registry);
  rebalances_ = &prometheus::BuildCounter()
                     .Name("xpd_rebalances_total")
                     .Help(
                         "Expert rebalances by outcome: committed, aborted (a rank failed; the "
                         "old placement stays), skipped (requested but the plan declined).")
                     .Labels(labels)
                     .Register(*registry);
  duration_ = &prometheus::BuildHistogram()
                   .Name("xpd_rebalance_duration_seconds")
                   .Help("Wall time of expert placement rollouts, prepare through commit or abort.")
                   .Labels(labels)
                   .Register(*registry);
  moved_bytes_ = &prometheus::BuildCounter()
                      .Name("xpd_rebalance_moved_bytes_total")
                      .Help("Expert weight bytes newly loaded by ranks in committed rollouts.")
                      .Labels(labels)
                      .Register(*registry);
}

void PlacementMetrics::SetEpoch(const std::string& group, int64_t epoch) {
  if (epoch_ == nullptr) return;
  epoch_->Add({{"ep_group", group}}).Set(static_cast<double>(epoch));
  // Present from the group's first placement on, so rate() has a baseline.
  for (const char* outcome : {"committed", "aborted", "skipped"}) {
    rebalances_->Add({{"ep_group", group}, {"outcome", outcome}});
  }
  moved_bytes_->Add({{"ep_group", group}});
  duration_->Add({{"ep_group", group}}, RolloutBuckets());
}

void PlacementMetrics::SetBalance(const std::string& group, double overall,
                                  const std::vector<int32_t>& layers,
                                  const std::vector<double>& layer_balance, int64_t window_tokens) {
  if (balance_ == nullptr) return;
  balance_->Add({{"ep_group", group}}).Set(overall);
  for (size_t l = 0; l < layers.size() && l < layer_balance.size(); ++l) {
    layer_balance_->Add({{"ep_group", group}, {"layer", std::to_string(layers[l])}})
        .Set(layer_balance[l]);
  }
  window_tokens_->Add({{"ep_group", group}}).Set(static_cast<double>(window_tokens));
}

void PlacementMetrics::RecordRebalance(const std::string& group, const std::string& outcome,
                                       bool ran, double duration_seconds, int64_t bytes_moved) {
  if (rebalances_ == nullptr) return;
  rebalances_->Add({{"ep_group", group}, {"outcome", outcome}}).Increment();
  if (!ran) return;
  duration_->Add({{"ep_group", group}}, RolloutBuckets()).Observe(duration_seconds);
  if (outcome == "committed") {
    moved_bytes_->Add({{"ep_group", group}}).Increment(static_cast<double>(bytes_moved));
  }
}

}  // namespace xpd::controller
