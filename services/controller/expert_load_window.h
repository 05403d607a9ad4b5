// The expert loads an EP group reported over the last `window` (the
// controller's --load-window): what the balance figures and the rebalancer
// look at. Loads are per logical expert, so reports keep counting across
// placement epochs; only their age matters.
//
// Memory stays bounded whatever the number of ranks and heartbeat rate:
// reports are summed into kBuckets time buckets of window / kBuckets each,
// and a bucket is dropped once its newest report is older than the window.
// The window therefore spans between `window` and window * (1 + 1/kBuckets).
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/placement/expert_loads.h"
#include "common/placement/expert_placement.h"
#include "xpd/v1/cluster.pb.h"

namespace xpd::controller {

// A report as dense [moe layer][expert] counts in the order of
// placement.layers (layers it does not mention are zero). INVALID_ARGUMENT
// naming the field when num_experts differs from the placement's, the size
// of `tokens` is not layers * num_experts, a layer is not a MoE layer of the
// placement or repeated, or a count is negative.
absl::StatusOr<std::vector<int64_t>> AlignExpertLoad(const placement::ExpertPlacement& placement,
                                                     const xpd::v1::ExpertLoad& load);

class ExpertLoadWindow {
 public:
  static constexpr int kBuckets = 64;

  ExpertLoadWindow(int32_t num_moe_layers, int32_t num_experts, absl::Duration window);

  // `dense` as from AlignExpertLoad, arrived at `now`.
  void Add(absl::Time now, const std::vector<int64_t>& dense);
  // Drops what is older than the window at `now`.
  void Expire(absl::Time now);

  // Sums over the window (call Expire first): [moe layer][expert] ...
  placement::ExpertLoads Loads() const;
  // ... the same flat, and everything together (token-expert pairs).
  const std::vector<int64_t>& totals() const { return totals_; }
  int64_t total_tokens() const { return total_tokens_; }
  int32_t num_moe_layers() const { return num_moe_layers_; }
  int32_t num_experts() const { return num_experts_; }

 private:
  struct Bucket {
    int64_t index;      // floor(arrival / bucket width)
    absl::Time newest;  // latest arrival summed into it
    std::vector<int64_t> tokens;
  };

  const int32_t num_moe_layers_;
  const int32_t num_experts_;
  const absl::Duration window_;
  const absl::Duration bucket_width_;
  std::deque<Bucket> buckets_;   // oldest first
  std::vector<int64_t> totals_;  // the sum of buckets_, kept incrementally
  int64_t total_tokens_ = 0;
};

}  // namespace xpd::controller
