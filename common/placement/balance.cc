#include "common/placement/balance.h"

#include <algorithm>

namespace xpd::placement {

absl::StatusOr<PlacementBalance> EvaluateBalance(const ExpertPlacement& placement,
                                                 const ExpertLoads& loads) {
  if (absl::Status s = ValidatePlacement(placement); !s.ok()) return s;
  if (absl::Status s = ValidateLoads(placement, loads); !s.ok()) return s;
  const size_t num_layers = placement.layers.size();
  const int32_t per_rank = placement.slots_per_rank();
  PlacementBalance out;
  out.layer_balance.resize(num_layers);
  out.layer_max_load.resize(num_layers);
  out.layer_mean_load.resize(num_layers);
  out.rank_load.assign(placement.num_ranks, 0.0);
  std::vector<int32_t> replicas(placement.num_experts);
  std::vector<double> rank_load(placement.num_ranks);
  double sum_max = 0, sum_mean = 0;
  for (size_t l = 0; l < num_layers; ++l) {
    const std::vector<int32_t>& row = placement.phy2log[l];
    const std::vector<double>& load = loads[l];
    std::fill(replicas.begin(), replicas.end(), 0);
    for (const int32_t e : row) ++replicas[e];
    std::fill(rank_load.begin(), rank_load.end(), 0.0);
    for (size_t s = 0; s < row.size(); ++s) {
      rank_load[s / per_rank] += load[row[s]] / replicas[row[s]];
    }
    double total = 0, max_load = 0;
    for (int32_t r = 0; r < placement.num_ranks; ++r) {
      total += rank_load[r];
      max_load = std::max(max_load, rank_load[r]);
      out.rank_load[r] += rank_load[r];
    }
    const double mean = total / placement.num_ranks;
    out.layer_max_load[l] = max_load;
    out.layer_mean_load[l] = mean;
    out.layer_balance[l] = mean > 0 ? max_load / mean : 1.0;
    sum_max += max_load;
    sum_mean += mean;
  }
  out.overall = sum_mean > 0 ? sum_max / sum_mean : 1.0;
  return out;
}

}  // namespace xpd::placement
