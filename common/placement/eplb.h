// DeepSeek's expert-parallel load balancer (EPLB, spec §7.1): from per-expert
// loads, how many replicas each logical expert gets and which physical slot
// (hence which GPU) each replica occupies. A faithful port of eplb.py at
// commit d52c72d, including its tie-breaking, so that plans can be checked
// against the reference; the differences are listed on RebalanceExperts.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/placement/expert_loads.h"
#include "common/placement/expert_placement.h"

namespace xpd::placement {

struct EplbResult {
  int32_t num_logical = 0;
  // Width of each expert's log2phy entry: the most replicas any expert got in
  // any layer (eplb.py pads to the same global maximum).
  int32_t max_replicas = 0;
  // [layer][physical slot] -> logical expert; slot p lives on GPU
  // p / (num_replicas / num_gpus).
  std::vector<std::vector<int32_t>> phy2log;
  // [layer][expert * max_replicas + r] -> slot of the expert's r-th replica,
  // -1 past logcnt. r is the order in which replicas were created (the
  // original first), not slot order.
  std::vector<std::vector<int32_t>> log2phy;
  // [layer][expert] -> number of replicas, >= 1.
  std::vector<std::vector<int32_t>> logcnt;

  int32_t Log2Phy(int32_t layer, int32_t expert, int32_t replica) const {
    return log2phy[layer][static_cast<size_t>(expert) * max_replicas + replica];
  }
};

// `loads` is row-major [num_layers][num_logical]. Hierarchical policy when
// num_groups % num_nodes == 0 (groups packed onto nodes, replication and
// packing inside each node), otherwise global (the same routine with one
// group and one node). Note that num_nodes = 1 therefore selects the
// hierarchical routine, which orders experts by group load before
// replicating; only num_groups = 1 gives the plain global order.
//
// Requirements (INVALID_ARGUMENT naming the argument otherwise): num_layers
// >= 0, num_logical >= 1, loads.size() == num_layers * num_logical, loads
// finite and >= 0, num_replicas >= num_logical and a multiple of num_gpus,
// num_gpus a multiple of num_nodes, num_groups and num_nodes >= 1, and for
// the hierarchical policy num_logical a multiple of num_groups.
//
// Ties: items of equal load are packed in index order, a pack is chosen by
// lowest total then lowest index, and a redundant slot goes to the expert
// with the highest load per replica, the lowest index winning (torch.max).
// Indices are those eplb.py sees at each step: inside a node of the
// hierarchical policy, experts are numbered node-major (the node's groups in
// packing order), so a tie goes to the expert of the heavier-packed group,
// not necessarily the lowest logical id.
//
// Differences from eplb.py: its torch.sort is not stable (std::sort or
// x86-simd-sort on CPU), so the order of equal items, and with it which of
// two equally loaded replicas lands where, depends on the torch build; here
// it is index order. Swapping equal items leaves every pack total, hence the
// balance, unchanged. Arithmetic is in double where eplb.py uses float32, so
// loads whose float32 rounding creates or breaks a tie may give a different,
// equally valid, plan. num_gpus % num_nodes is required for the global policy
// too, where eplb.py does not check it.
absl::StatusOr<EplbResult> RebalanceExperts(absl::Span<const double> loads, int32_t num_layers,
                                            int32_t num_logical, int32_t num_replicas,
                                            int32_t num_groups, int32_t num_nodes,
                                            int32_t num_gpus);

// A rebalanced successor of `current`: same ranks (one GPU each), slots and
// MoE layers, epoch + 1, phy2log from RebalanceExperts on `loads`.
absl::StatusOr<ExpertPlacement> BalancedPlacement(const ExpertPlacement& current,
                                                  const ExpertLoads& loads, int32_t num_groups,
                                                  int32_t num_nodes);

}  // namespace xpd::placement
