#include "common/placement/placement_proto.h"

#include "absl/strings/str_cat.h"

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

nlohmann::json RebalanceRecordToJson(const xpd::v1::RebalanceRecord& record) {
  return {{"epoch", record.epoch()},
          {"outcome", record.outcome()},
          {"reason", record.reason()},
          {"bytes_moved", record.bytes_moved()},
          {"duration_seconds", record.duration_seconds()},
          {"unix_ms", record.unix_ms()},
          {"balance_before", record.balance_before()},
          {"balance_predicted", record.balance_predicted()}};
}

absl::StatusOr<xpd::v1::RebalanceRecord> RebalanceRecordFromJson(const nlohmann::json& j) {
  if (!j.is_object()) return absl::InvalidArgumentError("not an object");
  xpd::v1::RebalanceRecord record;
  try {
    record.set_epoch(j.value("epoch", int64_t{0}));
    record.set_outcome(j.value("outcome", std::string()));
    record.set_reason(j.value("reason", std::string()));
    record.set_bytes_moved(j.value("bytes_moved", int64_t{0}));
    record.set_duration_seconds(j.value("duration_seconds", 0.0));
    record.set_unix_ms(j.value("unix_ms", int64_t{0}));
    record.set_balance_before(j.value("balance_before", 0.0));
    record.set_balance_predicted(j.value("balance_predicted", 0.0));
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("a field has the wrong type: ", e.what()));
  }
  return record;
}

}  // namespace xpd::placement
