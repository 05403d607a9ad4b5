#include <cstring>
#include <vector>

#include "common/transport/expert_exchange.h"

namespace xpd::transport {

absl::Status LocalExpertExchange::DispatchCombine(const MoeExchangeArgs& args,
                                                  const ExpertCompute& compute_local) {
  const int64_t slots = args.rows * args.top_k, d = args.hidden;
  if (slots == 0) return compute_local({});
  // Dispatch: gather each expert's (token, k) slots into contiguous rows.
  int32_t max_expert = 0;
  for (int64_t s = 0; s < slots; ++s) max_expert = std::max(max_expert, args.expert_ids[s]);
  std::vector<std::vector<int64_t>> slots_of(max_expert + 1);
  for (int64_t s = 0; s < slots; ++s) slots_of[args.expert_ids[s]].push_back(s);
  std::vector<int64_t> order;  // gathered row -> slot
  order.reserve(slots);
  std::lock_guard<std::mutex> lock(mu_);
  if (gathered_.size() < static_cast<size_t>(slots * d)) {
    gathered_.resize(slots * d);
    computed_.resize(slots * d);
  }
  float* gathered = gathered_.data();
  float* computed = computed_.data();
  std::vector<ExpertBatch> batches;
  for (int32_t e = 0; e <= max_expert; ++e) {
    if (slots_of[e].empty()) continue;
    const int64_t first = static_cast<int64_t>(order.size());
    for (int64_t s : slots_of[e]) {
      std::memcpy(&gathered[order.size() * d], args.x + (s / args.top_k) * d, sizeof(float) * d);
      order.push_back(s);
    }
    batches.push_back({.expert = e,
                       .in = &gathered[first * d],
                       .out = &computed[first * d],
                       .rows = static_cast<int64_t>(slots_of[e].size())});
  }
  if (absl::Status status = compute_local(batches); !status.ok()) return status;
  // Combine: each token's weighted expert outputs, summed in its top-k order.
  std::vector<const float*> slot_out(slots);
  for (size_t i = 0; i < order.size(); ++i) slot_out[order[i]] = &computed[i * d];
  for (int64_t r = 0; r < args.rows; ++r) {
    float* out = args.out + r * d;
    for (int64_t i = 0; i < d; ++i) {
      float sum = 0.0f;
      for (int32_t k = 0; k < args.top_k; ++k) {
        sum += args.weights[r * args.top_k + k] * slot_out[r * args.top_k + k][i];
      }
      out[i] = sum;
    }
  }
  return absl::OkStatus();
}

}  // namespace xpd::transport
