// EPLB benchmark (not a test): time to compute a rebalanced placement on
// DeepSeek-V3's shape (61 layers, an upper bound on its 58 MoE + 1 MTP
// layers; 256 experts in 8 groups; 288 slots), under Zipf-skewed loads, for
// the hierarchical and global policies. The same-run baseline is the time to
// evaluate the balance of the current placement, the cheapest thing a
// controller does with a load window; the balance before (cold-start layout)
// and after is printed alongside.
//   eplb_bench [--reps 50] [--zipf 1.1]
// Prints a table and one JSON line.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/placement/balance.h"
#include "common/placement/eplb.h"
#include "common/placement/expert_placement.h"
#include "common/placement/rebalance_policy.h"
#include "nlohmann/json.hpp"

namespace {

using namespace xpd::placement;

constexpr int32_t kLayers = 61, kExperts = 256, kSlots = 288;

struct Config {
  const char* name;
  int32_t groups, nodes, gpus;
};

ExpertLoads ZipfLoads(double s, uint64_t seed) {
  std::mt19937_64 gen(seed);
  ExpertLoads loads(kLayers, std::vector<double>(kExperts));
  for (std::vector<double>& row : loads) {
    std::vector<int32_t> rank(kExperts);
    std::iota(rank.begin(), rank.end(), 0);
    for (int32_t i = kExperts - 1; i > 0; --i) std::swap(rank[i], rank[gen() % (i + 1)]);
    for (int32_t e = 0; e < kExperts; ++e) row[e] = std::round(1e6 / std::pow(rank[e] + 1, s));
  }
  return loads;
}

// Median wall time of `reps` calls, in milliseconds, after two warm-up calls.
template <typename F>
double MedianMs(int reps, F&& call) {
  call();
  call();
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    const auto start = std::chrono::steady_clock::now();
    call();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                     .count());
  }
  std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
  return ms[ms.size() / 2];
}

template <typename T>
const T& Check(const absl::StatusOr<T>& v) {
  if (!v.ok()) {
    std::cerr << v.status() << "\n";
    std::exit(1);
  }
  return *v;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 50;
  double zipf = 1.1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--reps")) reps = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--zipf")) zipf = std::atof(argv[i + 1]);
  }
  const ExpertLoads loads = ZipfLoads(zipf, 61);
  std::vector<double> flat;
  for (const std::vector<double>& row : loads) flat.insert(flat.end(), row.begin(), row.end());
  std::vector<int32_t> moe_layers(kLayers);
  std::iota(moe_layers.begin(), moe_layers.end(), 0);

  const Config configs[] = {{"hierarchical 8g/4n/32gpu", 8, 4, 32},
                            {"hierarchical 8g/1n/32gpu", 8, 1, 32},
                            {"global 1g/1n/32gpu", 1, 1, 32},
                            {"global 8g/3n/96gpu", 8, 3, 96},
                            {"global 1g/1n/288gpu", 1, 1, 288}};
  std::cout << absl::StrFormat("%d layers x %d experts x %d slots, Zipf s=%.2f, median of %d\n",
                               kLayers, kExperts, kSlots, zipf, reps);
  std::cout << absl::StrFormat("%-26s %10s %10s %10s %10s %8s %8s %8s\n", "policy", "eplb ms",
                               "placem ms", "plan ms", "eval ms", "x eval", "before", "after");
  nlohmann::json rows = nlohmann::json::array();
  for (const Config& c : configs) {
    const ExpertPlacement current =
        InitialPlacement(c.gpus, kExperts, kSlots - kExperts, moe_layers);
    const double eplb_ms = MedianMs(reps, [&] {
      Check(RebalanceExperts(flat, kLayers, kExperts, kSlots, c.groups, c.nodes, c.gpus));
    });
    const double placement_ms =
        MedianMs(reps, [&] { Check(BalancedPlacement(current, loads, c.groups, c.nodes)); });
    const RebalancePolicy policy{.expert_bytes = 44'050'944};
    const double plan_ms = MedianMs(reps, [&] {
      Check(PlanRebalance(current, loads, {c.groups, c.nodes}, policy, absl::InfiniteDuration()));
    });
    const double eval_ms = MedianMs(reps, [&] { Check(EvaluateBalance(current, loads)); });
    const ExpertPlacement next = Check(BalancedPlacement(current, loads, c.groups, c.nodes));
    const double before = Check(EvaluateBalance(current, loads)).overall;
    const double after = Check(EvaluateBalance(next, loads)).overall;
    std::cout << absl::StrFormat("%-26s %10.3f %10.3f %10.3f %10.4f %8.1f %8.4f %8.4f\n", c.name,
                                 eplb_ms, placement_ms, plan_ms, eval_ms, eplb_ms / eval_ms, before,
                                 after);
    rows.push_back({{"policy", c.name},
                    {"eplb_ms", eplb_ms},
                    {"balanced_placement_ms", placement_ms},
                    {"plan_rebalance_ms", plan_ms},
                    {"evaluate_balance_ms", eval_ms},
                    {"balance_before", before},
                    {"balance_after", after}});
  }
  const nlohmann::json out = {{"bench", "eplb"}, {"layers", kLayers}, {"experts", kExperts},
                              {"slots", kSlots}, {"zipf", zipf},      {"reps", reps},
                              {"results", rows}};
  std::cout << out.dump() << std::endl;
  return 0;
}
