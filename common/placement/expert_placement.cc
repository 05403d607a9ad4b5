#include "common/placement/expert_placement.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace xpd::placement {

int32_t ExpertPlacement::MoeIndex(int32_t model_layer) const {
  const auto it = std::lower_bound(layers.begin(), layers.end(), model_layer);
  if (it == layers.end() || *it != model_layer) return -1;
  return static_cast<int32_t>(it - layers.begin());
}

std::vector<int32_t> ExpertPlacement::HeldExperts(int32_t rank, int32_t moe_index) const {
  const int32_t per_rank = slots_per_rank();
  const std::vector<int32_t>& row = phy2log[moe_index];
  std::vector<int32_t> held(row.begin() + rank * per_rank, row.begin() + (rank + 1) * per_rank);
  std::sort(held.begin(), held.end());
  held.erase(std::unique(held.begin(), held.end()), held.end());
  return held;
}

ExpertPlacement InitialPlacement(int32_t num_ranks, int32_t num_experts, int32_t redundant,
                                 std::vector<int32_t> moe_layers) {
  ExpertPlacement p{.epoch = 0,
                    .num_ranks = num_ranks,
                    .num_experts = num_experts,
                    .slots_per_layer = num_experts + redundant,
                    .layers = std::move(moe_layers)};
  std::vector<int32_t> row(p.slots_per_layer);
  for (int32_t s = 0; s < p.slots_per_layer; ++s) row[s] = num_experts > 0 ? s % num_experts : 0;
  p.phy2log.assign(p.layers.size(), row);
  return p;
}

absl::Status ValidatePlacement(const ExpertPlacement& p) {
  if (p.num_ranks < 1) return absl::InvalidArgumentError("placement: num_ranks must be >= 1");
  if (p.num_experts < 1) return absl::InvalidArgumentError("placement: num_experts must be >= 1");
  if (p.slots_per_layer < p.num_experts || p.slots_per_layer % p.num_ranks != 0) {
    return absl::InvalidArgumentError(absl::StrCat("placement: slots_per_layer ", p.slots_per_layer,
                                                   " must be >= num_experts ", p.num_experts,
                                                   " and a multiple of num_ranks ", p.num_ranks));
  }
  if (!std::is_sorted(p.layers.begin(), p.layers.end()) ||
      std::adjacent_find(p.layers.begin(), p.layers.end()) != p.layers.end()) {
    return absl::InvalidArgumentError("placement: layers must be strictly ascending");
  }
  if (p.phy2log.size() != p.layers.size()) {
    return absl::InvalidArgumentError(absl::StrCat("placement: phy2log has ", p.phy2log.size(),
                                                   " rows for ", p.layers.size(), " layers"));
  }
  for (size_t l = 0; l < p.phy2log.size(); ++l) {
    const std::vector<int32_t>& row = p.phy2log[l];
    if (static_cast<int32_t>(row.size()) != p.slots_per_layer) {
      return absl::InvalidArgumentError(absl::StrCat("placement: layer ", p.layers[l], " has ",
                                                     row.size(), " slots, expected ",
                                                     p.slots_per_layer));
    }
    std::vector<bool> seen(p.num_experts, false);
    for (size_t s = 0; s < row.size(); ++s) {
      if (row[s] < 0 || row[s] >= p.num_experts) {
        return absl::InvalidArgumentError(absl::StrCat("placement: layer ", p.layers[l], " slot ",
                                                       s, " holds expert ", row[s],
                                                       ", out of range [0, ", p.num_experts, ")"));
      }
      seen[row[s]] = true;
    }
    for (int32_t e = 0; e < p.num_experts; ++e) {
      if (!seen[e]) {
        return absl::InvalidArgumentError(
            absl::StrCat("placement: layer ", p.layers[l], " has no slot for expert ", e));
      }
    }
  }
  return absl::OkStatus();
}

ReplicaIndex::ReplicaIndex(const ExpertPlacement& p) {
  slots_.resize(p.phy2log.size());
  for (size_t l = 0; l < p.phy2log.size(); ++l) {
    slots_[l].resize(p.num_experts);
    for (size_t s = 0; s < p.phy2log[l].size(); ++s) {
      slots_[l][p.phy2log[l][s]].push_back(static_cast<int32_t>(s));
    }
  }
}

int64_t BytesToMove(const ExpertPlacement& from, const ExpertPlacement& to, int64_t expert_bytes) {
  int64_t moved = 0;
  for (size_t l = 0; l < to.phy2log.size(); ++l) {
    const int32_t from_index = from.MoeIndex(to.layers[l]);
    for (int32_t rank = 0; rank < to.num_ranks; ++rank) {
      std::vector<int32_t> before;
      if (from_index >= 0 && rank < from.num_ranks) before = from.HeldExperts(rank, from_index);
      for (int32_t e : to.HeldExperts(rank, static_cast<int32_t>(l))) {
        if (!std::binary_search(before.begin(), before.end(), e)) moved += expert_bytes;
      }
    }
  }
  return moved;
}

std::string PlacementToJson(const ExpertPlacement& p) {
  nlohmann::json j = {{"epoch", p.epoch},
                      {"num_ranks", p.num_ranks},
                      {"num_experts", p.num_experts},
                      {"slots_per_layer", p.slots_per_layer},
                      {"layers", p.layers},
                      {"phy2log", p.phy2log}};
  return j.dump();
}

absl::StatusOr<ExpertPlacement> PlacementFromJson(const std::string& text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("placement: not a JSON object");
  }
  ExpertPlacement p;
  const auto field = [&](const char* name, auto& out) -> absl::Status {
    if (!j.contains(name)) {
      return absl::InvalidArgumentError(absl::StrCat("placement: missing field \"", name, "\""));
    }
    try {
      j.at(name).get_to(out);
    } catch (const nlohmann::json::exception&) {
      return absl::InvalidArgumentError(
          absl::StrCat("placement: field \"", name, "\" has the wrong type"));
    }
    return absl::OkStatus();
  };
  for (absl::Status s :
       {field("epoch", p.epoch), field("num_ranks", p.num_ranks),
        field("num_experts", p.num_experts), field("slots_per_layer", p.slots_per_layer),
        field("layers", p.layers), field("phy2log", p.phy2log)}) {
    if (!s.ok()) return s;
  }
  if (absl::Status s = ValidatePlacement(p); !s.ok()) return s;
  return p;
}

}  // namespace xpd::placement
