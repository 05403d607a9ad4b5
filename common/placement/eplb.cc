#include "common/placement/eplb.h"

#include <algorithm>
#include <functional>
#include <numeric>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace xpd::placement {
namespace {

absl::Status ArgumentError(const char* argument, int64_t value, const std::string& requirement) {
  return absl::InvalidArgumentError(
      absl::StrCat("eplb: ", argument, " = ", value, " ", requirement));
}

absl::Status ValidateArguments(absl::Span<const double> loads, int32_t num_layers,
                               int32_t num_logical, int32_t num_replicas, int32_t num_groups,
                               int32_t num_nodes, int32_t num_gpus) {
  if (num_layers < 0) return ArgumentError("num_layers", num_layers, "must be >= 0");
  if (num_logical < 1) return ArgumentError("num_logical", num_logical, "must be >= 1");
  if (num_groups < 1) return ArgumentError("num_groups", num_groups, "must be >= 1");
  if (num_nodes < 1) return ArgumentError("num_nodes", num_nodes, "must be >= 1");
  if (num_gpus < 1) return ArgumentError("num_gpus", num_gpus, "must be >= 1");
  if (num_gpus % num_nodes != 0) {
    return ArgumentError("num_gpus", num_gpus,
                         absl::StrCat("must be a multiple of num_nodes = ", num_nodes));
  }
  if (num_replicas < num_logical) {
    return ArgumentError("num_replicas", num_replicas,
                         absl::StrCat("must be >= num_logical = ", num_logical));
  }
  if (num_replicas % num_gpus != 0) {
    return ArgumentError("num_replicas", num_replicas,
                         absl::StrCat("must be a multiple of num_gpus = ", num_gpus));
  }
  if (num_groups % num_nodes == 0 && num_logical % num_groups != 0) {
    return ArgumentError("num_logical", num_logical,
                         absl::StrCat("must be a multiple of num_groups = ", num_groups,
                                      " for the hierarchical policy"));
  }
  const int64_t expected = int64_t{num_layers} * num_logical;
  if (static_cast<int64_t>(loads.size()) != expected) {
    return ArgumentError("loads.size()", static_cast<int64_t>(loads.size()),
                         absl::StrCat("must be num_layers * num_logical = ", expected));
  }
  return ValidateLoadValues(loads, "loads");
}

// Scratch of balanced_packing, kept across calls so a plan allocates per
// layer only its output rows.
struct PackScratch {
  std::vector<int32_t> order;
  std::vector<std::pair<double, int32_t>> heap;  // (pack total, pack) of non-full packs
  std::vector<int32_t> filled;
};

// eplb.py balanced_packing: n items into num_packs packs of exactly
// n / num_packs items. Heaviest first (index order on ties), each into the
// non-full pack with the lowest total, lowest index on ties; pos is the
// item's insertion position in its pack. One item per pack is the identity,
// not the greedy result, as in eplb.py.
void BalancedPacking(absl::Span<const double> weight, int32_t num_packs, PackScratch& s,
                     int32_t* pack, int32_t* pos) {
  const int32_t n = static_cast<int32_t>(weight.size());
  const int32_t per_pack = n / num_packs;
  if (per_pack == 1) {
    std::iota(pack, pack + n, 0);
    std::fill(pos, pos + n, 0);
    return;
  }
  s.order.resize(n);
  std::iota(s.order.begin(), s.order.end(), 0);
  std::sort(s.order.begin(), s.order.end(), [&](int32_t a, int32_t b) {
    return weight[a] > weight[b] || (weight[a] == weight[b] && a < b);
  });
  // Lexicographic (total, index) min-heap pops exactly Python's
  // min(non-full packs, key=total). Ascending order is already a heap.
  s.heap.clear();
  for (int32_t p = 0; p < num_packs; ++p) s.heap.emplace_back(0.0, p);
  s.filled.assign(num_packs, 0);
  const auto later = std::greater<std::pair<double, int32_t>>();
  for (const int32_t item : s.order) {
    std::pop_heap(s.heap.begin(), s.heap.end(), later);
    auto& [total, p] = s.heap.back();
    pack[item] = p;
    pos[item] = s.filled[p]++;
    if (s.filled[p] < per_pack) {
      total += weight[item];
      std::push_heap(s.heap.begin(), s.heap.end(), later);
    } else {
      s.heap.pop_back();
    }
  }
}

// eplb.py replicate_experts for one row: slot i < n holds expert i, each
// further slot goes to the expert with the highest load per replica (lowest
// index on ties, as torch.max returns the first maximum).
void ReplicateExperts(absl::Span<const double> weight, int32_t num_phy,
                      std::vector<std::pair<double, int32_t>>& heap, int32_t* phy2log,
                      int32_t* phy_rank, int32_t* count) {
  const int32_t n = static_cast<int32_t>(weight.size());
  for (int32_t e = 0; e < n; ++e) {
    phy2log[e] = e;
    phy_rank[e] = 0;
    count[e] = 1;
  }
  if (num_phy == n) return;
  const auto lower_priority = [](const std::pair<double, int32_t>& a,
                                 const std::pair<double, int32_t>& b) {
    return a.first < b.first || (a.first == b.first && a.second > b.second);
  };
  heap.clear();
  for (int32_t e = 0; e < n; ++e) heap.emplace_back(weight[e], e);
  std::make_heap(heap.begin(), heap.end(), lower_priority);
  for (int32_t p = n; p < num_phy; ++p) {
    std::pop_heap(heap.begin(), heap.end(), lower_priority);
    auto& [per_replica, e] = heap.back();
    phy2log[p] = e;
    phy_rank[p] = count[e]++;
    // Divided, not scaled, so the value is bit-identical to eplb.py's
    // weight / logcnt and ties resolve the same way.
    per_replica = weight[e] / count[e];
    std::push_heap(heap.begin(), heap.end(), lower_priority);
  }
}

// eplb.py rebalance_experts_hierarchical for one layer.
class LayerBalancer {
 public:
  LayerBalancer(int32_t num_logical, int32_t num_replicas, int32_t num_groups, int32_t num_nodes,
                int32_t num_gpus)
      : num_nodes_(num_nodes),
        group_size_(num_logical / num_groups),
        groups_per_node_(num_groups / num_nodes),
        experts_per_node_(num_logical / num_nodes),
        slots_per_node_(num_replicas / num_nodes),
        gpus_per_node_(num_gpus / num_nodes),
        slots_per_gpu_(num_replicas / num_gpus),
        group_load_(num_groups),
        group_pack_(num_groups),
        group_pos_(num_groups),
        node_to_logical_(num_logical),
        node_load_(experts_per_node_),
        node_count_(experts_per_node_),
        replica_expert_(slots_per_node_),
        replica_rank_(slots_per_node_),
        replica_load_(slots_per_node_),
        replica_gpu_(slots_per_node_),
        replica_pos_(slots_per_node_) {}

  // Fills phy2log and slot_rank (replica rank of each slot) for num_replicas
  // slots and logcnt for num_logical experts.
  void Balance(const double* loads, int32_t* phy2log, int32_t* slot_rank, int32_t* logcnt) {
    const int32_t num_groups = static_cast<int32_t>(group_load_.size());
    // Step 1: groups onto nodes; experts renumbered node-major, groups in
    // packing order, experts of a group in their original order.
    for (int32_t g = 0; g < num_groups; ++g) {
      const double* first = loads + static_cast<size_t>(g) * group_size_;
      group_load_[g] = std::accumulate(first, first + group_size_, 0.0);
    }
    BalancedPacking(group_load_, num_nodes_, pack_scratch_, group_pack_.data(), group_pos_.data());
    for (int32_t g = 0; g < num_groups; ++g) {
      const int32_t base = (group_pack_[g] * groups_per_node_ + group_pos_[g]) * group_size_;
      for (int32_t j = 0; j < group_size_; ++j) node_to_logical_[base + j] = g * group_size_ + j;
    }
    for (int32_t node = 0; node < num_nodes_; ++node) {
      const int32_t* logical =
          node_to_logical_.data() + static_cast<size_t>(node) * experts_per_node_;
      // Step 2: replicas inside the node.
      for (int32_t i = 0; i < experts_per_node_; ++i) node_load_[i] = loads[logical[i]];
      ReplicateExperts(node_load_, slots_per_node_, replicate_heap_, replica_expert_.data(),
                       replica_rank_.data(), node_count_.data());
      // Step 3: replicas onto the node's GPUs by load per replica.
      for (int32_t p = 0; p < slots_per_node_; ++p) {
        const int32_t e = replica_expert_[p];
        replica_load_[p] = node_load_[e] / node_count_[e];
      }
      BalancedPacking(replica_load_, gpus_per_node_, pack_scratch_, replica_gpu_.data(),
                      replica_pos_.data());
      for (int32_t p = 0; p < slots_per_node_; ++p) {
        const int32_t slot =
            node * slots_per_node_ + replica_gpu_[p] * slots_per_gpu_ + replica_pos_[p];
        phy2log[slot] = logical[replica_expert_[p]];
        slot_rank[slot] = replica_rank_[p];
      }
      for (int32_t i = 0; i < experts_per_node_; ++i) logcnt[logical[i]] = node_count_[i];
    }
  }

 private:
  const int32_t num_nodes_, group_size_, groups_per_node_, experts_per_node_, slots_per_node_,
      gpus_per_node_, slots_per_gpu_;
  std::vector<double> group_load_;
  std::vector<int32_t> group_pack_, group_pos_;
  std::vector<int32_t> node_to_logical_;  // node-major index -> logical expert
  std::vector<double> node_load_;
  std::vector<int32_t> node_count_;
  std::vector<int32_t> replica_expert_, replica_rank_;  // per replica of the node
  std::vector<double> replica_load_;
  std::vector<int32_t> replica_gpu_, replica_pos_;
  PackScratch pack_scratch_;
  std::vector<std::pair<double, int32_t>> replicate_heap_;
};

}  // namespace

absl::StatusOr<EplbResult> RebalanceExperts(absl::Span<const double> loads, int32_t num_layers,
                                            int32_t num_logical, int32_t num_replicas,
                                            int32_t num_groups, int32_t num_nodes,
                                            int32_t num_gpus) {
  if (absl::Status s = ValidateArguments(loads, num_layers, num_logical, num_replicas, num_groups,
                                         num_nodes, num_gpus);
      !s.ok()) {
    return s;
  }
  if (num_groups % num_nodes != 0) num_groups = num_nodes = 1;  // global policy
  LayerBalancer balancer(num_logical, num_replicas, num_groups, num_nodes, num_gpus);

  EplbResult result;
  result.num_logical = num_logical;
  result.phy2log.assign(num_layers, std::vector<int32_t>(num_replicas));
  result.logcnt.assign(num_layers, std::vector<int32_t>(num_logical));
  std::vector<int32_t> slot_rank(static_cast<size_t>(num_layers) * num_replicas);
  for (int32_t l = 0; l < num_layers; ++l) {
    balancer.Balance(loads.data() + static_cast<size_t>(l) * num_logical, result.phy2log[l].data(),
                     slot_rank.data() + static_cast<size_t>(l) * num_replicas,
                     result.logcnt[l].data());
    for (const int32_t c : result.logcnt[l]) result.max_replicas = std::max(result.max_replicas, c);
  }
  const size_t width = result.max_replicas;
  result.log2phy.assign(num_layers, std::vector<int32_t>(num_logical * width, -1));
  for (int32_t l = 0; l < num_layers; ++l) {
    const int32_t* rank = slot_rank.data() + static_cast<size_t>(l) * num_replicas;
    for (int32_t s = 0; s < num_replicas; ++s) {
      result.log2phy[l][result.phy2log[l][s] * width + rank[s]] = s;
    }
  }
  return result;
}

absl::StatusOr<ExpertPlacement> BalancedPlacement(const ExpertPlacement& current,
                                                  const ExpertLoads& loads, int32_t num_groups,
                                                  int32_t num_nodes) {
  if (absl::Status s = ValidatePlacement(current); !s.ok()) return s;
  if (absl::Status s = ValidateLoads(current, loads); !s.ok()) return s;
  std::vector<double> flat;
  flat.reserve(loads.size() * current.num_experts);
  for (const std::vector<double>& row : loads) flat.insert(flat.end(), row.begin(), row.end());
  absl::StatusOr<EplbResult> plan =
      RebalanceExperts(flat, static_cast<int32_t>(loads.size()), current.num_experts,
                       current.slots_per_layer, num_groups, num_nodes, current.num_ranks);
  if (!plan.ok()) return plan.status();
  return ExpertPlacement{.epoch = current.epoch + 1,
                         .num_ranks = current.num_ranks,
                         .num_experts = current.num_experts,
                         .slots_per_layer = current.slots_per_layer,
                         .layers = current.layers,
                         .phy2log = std::move(plan->phy2log)};
}

}  // namespace xpd::placement
