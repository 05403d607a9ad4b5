// Where the routed experts live in an expert-parallel group: for one epoch
// and every MoE layer, a map physical slot -> logical expert. Slots are laid
// evenly on ranks (slot s lives on rank s / slots_per_rank()), and a logical
// expert may own several slots (redundant replicas of hot experts). Every
// rank, the controller and the balancer share this one description.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace xpd::placement {

struct ExpertPlacement {
  int64_t epoch = 0;
  int32_t num_ranks = 1;
  int32_t num_experts = 0;                    // logical routed experts per MoE layer
  int32_t slots_per_layer = 0;                // num_experts + redundant; a multiple of num_ranks
  std::vector<int32_t> layers;                // model layer index of each MoE layer, ascending
  std::vector<std::vector<int32_t>> phy2log;  // [moe layer][slot] -> logical expert

  int32_t slots_per_rank() const { return slots_per_layer / num_ranks; }
  int32_t RankOfSlot(int32_t slot) const { return slot / slots_per_rank(); }
  // Index of a model layer in `layers`, or -1 when it is not a MoE layer here.
  int32_t MoeIndex(int32_t model_layer) const;
  // Logical experts with at least one slot on `rank` in MoE layer `moe_index`,
  // ascending and without duplicates.
  std::vector<int32_t> HeldExperts(int32_t rank, int32_t moe_index) const;
};

// Slots laid out before any load is known: slot s holds expert s for the
// first num_experts slots, the redundant slots repeat experts 0, 1, ...
ExpertPlacement InitialPlacement(int32_t num_ranks, int32_t num_experts, int32_t redundant,
                                 std::vector<int32_t> moe_layers);

// INVALID_ARGUMENT naming the first problem: slot counts not divisible by the
// ranks, rows of the wrong length, an expert id out of range, or a logical
// expert with no slot in some layer.
absl::Status ValidatePlacement(const ExpertPlacement& placement);

// Per MoE layer and logical expert, the slots that hold it (ascending).
class ReplicaIndex {
 public:
  explicit ReplicaIndex(const ExpertPlacement& placement);
  const std::vector<int32_t>& Slots(int32_t moe_index, int32_t expert) const {
    return slots_[moe_index][expert];
  }

 private:
  std::vector<std::vector<std::vector<int32_t>>> slots_;
};

// Bytes of the routed-expert weights a rank must newly load to go from `from`
// to `to` (experts it holds in `to` but not in `from`, per layer), summed over
// ranks; `expert_bytes` is the size of one expert's three matrices.
int64_t BytesToMove(const ExpertPlacement& from, const ExpertPlacement& to, int64_t expert_bytes);

// The persisted form (a file, a Kubernetes ConfigMap): JSON with the fields
// above. Parse errors name the field.
std::string PlacementToJson(const ExpertPlacement& placement);
absl::StatusOr<ExpertPlacement> PlacementFromJson(const std::string& json);

}  // namespace xpd::placement
