#include <algorithm>
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
  CombineExpertOutputs(args.rows, args.top_k, d, args.weights, slot_out.data(), args.out);
  return absl::OkStatus();
}

void CombineExpertOutputs(int64_t rows, int32_t top_k, int64_t hidden, const float* weights,
                          const float* const* slot_out, float* out) {
  // Row by row, one expert output at a time: each element's sum runs in k
  // order exactly as a per-element loop would, but the inner loop is a
  // vectorizable axpy over a row that stays in L1.
  for (int64_t r = 0; r < rows; ++r) {
    float* y = out + r * hidden;
    std::fill_n(y, hidden, 0.0f);
    for (int32_t k = 0; k < top_k; ++k) {
      const float w = weights[r * top_k + k];
      const float* x = slot_out[r * top_k + k];
      for (int64_t i = 0; i < hidden; ++i) y[i] += w * x[i];
    }
  }
}

}  // namespace xpd::transport
