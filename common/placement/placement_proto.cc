#include "common/placement/placement_proto.h"

namespace xpd::placement {

xpd::v1::Placement ToProto(const ExpertPlacement& p) {
  xpd::v1::Placement proto;
  proto.set_epoch(p.epoch);
  proto.set_num_ranks(p.num_ranks);
  proto.set_num_experts(p.num_experts);
  proto.set_slots_per_layer(p.slots_per_layer);
  for (size_t l = 0; l < p.layers.size(); ++l) {
    xpd::v1::LayerPlacement* layer = proto.add_layers();
    layer->set_layer(p.layers[l]);
    layer->mutable_slot_expert()->Assign(p.phy2log[l].begin(), p.phy2log[l].end());
  }
  return proto;
}

absl::StatusOr<ExpertPlacement> FromProto(const xpd::v1::Placement& proto) {
  ExpertPlacement p{.epoch = proto.epoch(),
                    .num_ranks = proto.num_ranks(),
                    .num_experts = proto.num_experts(),
                    .slots_per_layer = proto.slots_per_layer()};
  for (const xpd::v1::LayerPlacement& layer : proto.layers()) {
    p.layers.push_back(layer.layer());
    p.phy2log.emplace_back(layer.slot_expert().begin(), layer.slot_expert().end());
  }
  if (absl::Status status = ValidatePlacement(p); !status.ok()) return status;
  return p;
}

}  // namespace xpd::placement
