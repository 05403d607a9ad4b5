// The controller's expert-placement metrics. Every series carries the
// controller's constant labels plus `ep_group` (a handful per cluster);
// per-layer series are bounded by the model's MoE layers.
//   xpd_expert_balance_ratio{ep_group}               busiest / mean rank load, overall
//   xpd_expert_layer_balance_ratio{ep_group,layer}   the same per MoE layer
//   xpd_expert_window_tokens{ep_group}               token-expert pairs in the load window
//   xpd_placement_epoch{ep_group}                    current placement epoch
//   xpd_rebalances_total{ep_group,outcome}           committed | aborted | skipped
//   xpd_rebalance_duration_seconds{ep_group}         rollouts (committed or aborted)
//   xpd_rebalance_moved_bytes_total{ep_group}        expert weights copied by commits
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace xpd::controller {

class PlacementMetrics {
 public:
  // No-op when `registry` is null.
  PlacementMetrics(prometheus::Registry* registry, const prometheus::Labels& labels);

  void SetEpoch(const std::string& group, int64_t epoch);
  // `layers`: model layer index of each entry of `layer_balance`.
  void SetBalance(const std::string& group, double overall, const std::vector<int32_t>& layers,
                  const std::vector<double>& layer_balance, int64_t window_tokens);
  // outcome: committed, aborted or skipped; duration and bytes only for
  // rollouts that ran (`ran`), bytes only counted when committed.
  void RecordRebalance(const std::string& group, const std::string& outcome, bool ran,
                       double duration_seconds, int64_t bytes_moved);

 private:
  prometheus::Family<prometheus::Gauge>* balance_ = nullptr;
  prometheus::Family<prometheus::Gauge>* layer_balance_ = nullptr;
  prometheus::Family<prometheus::Gauge>* window_tokens_ = nullptr;
  prometheus::Family<prometheus::Gauge>* epoch_ = nullptr;
  prometheus::Family<prometheus::Counter>* rebalances_ = nullptr;
  prometheus::Family<prometheus::Histogram>* duration_ = nullptr;
  prometheus::Family<prometheus::Counter>* moved_bytes_ = nullptr;
};

}  // namespace xpd::controller
