// xpd status --controller HOST:Q [--ep-group NAME] [--format text|json] [--timeout SECONDS]
// The cluster as the controller sees it: every registered rank with its
// health, EP group, placement epoch and load; and for the EP group (the only
// one unless --ep-group names it) its placement, expert balance over the
// load window, per-rank expert load, hottest experts and last rebalance.
// --format json prints one JSON object (a stable interface for scripts):
//   {"controller", "ranks": [{"id", "role", "address", "rank", "healthy",
//    "ep_group", "placement_epoch", "kv_blocks_total", "kv_blocks_free",
//    "running_requests", "queued_requests", "outstanding_prefill_tokens",
//    "last_heartbeat_unix_ms"}],
//    "ep_group", "placement": {"epoch", "num_ranks", "num_experts",
//    "slots_per_layer", "layers"}, "balance", "layer_balance": [{"layer",
//    "balance"}], "rank_load": [{"rank", "tokens"}], "hottest": [{"layer",
//    "expert", "tokens", "replicas"}], "window_tokens", "last_rebalance":
//    {"epoch", "outcome", "reason", "bytes_moved", "duration_seconds", "unix_ms"}}
// Without an EP group, "ep_group", "placement", "balance" and
// "last_rebalance" are null and the lists empty.
#include <chrono>
#include <iostream>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "common/base/status_macros.h"
#include "common/placement/placement_proto.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"
#include "services/cli/commands.h"
#include "xpd/v1/cluster.grpc.pb.h"

namespace xpd::cli {
namespace {

using nlohmann::json;

absl::Status RpcError(const std::string& controller, const char* rpc, const grpc::Status& status) {
  return absl::Status(
      static_cast<absl::StatusCode>(status.error_code()),
      absl::StrCat("controller ", controller, ": ", rpc, ": ",
                   absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())),
                   ": ", status.error_message()));
}

std::string RoleText(xpd::v1::Role role) {
  switch (role) {
    case xpd::v1::ROLE_ROUTER:
      return "router";
    case xpd::v1::ROLE_PREFILL:
      return "prefill";
    case xpd::v1::ROLE_DECODE:
      return "decode";
    default:
      return "unspecified";
  }
}

json RankJson(const xpd::v1::RankInfo& rank) {
  const xpd::v1::RankLoad& load = rank.load();
  return {{"id", rank.rank_id()},
          {"role", RoleText(rank.role())},
          {"address", rank.address()},
          {"rank", rank.rank()},
          {"healthy", rank.healthy()},
          {"ep_group", rank.ep_group()},
          {"placement_epoch", rank.placement_epoch()},
          {"kv_blocks_total", load.kv_blocks_total()},
          {"kv_blocks_free", load.kv_blocks_free()},
          {"running_requests", load.running_requests()},
          {"queued_requests", load.queued_requests()},
          {"outstanding_prefill_tokens", load.outstanding_prefill_tokens()},
          {"last_heartbeat_unix_ms", rank.last_heartbeat_unix_ms()}};
}

// `group` null when the cluster has no EP group yet.
json StatusJson(const std::string& controller, const xpd::v1::ListRanksResponse& ranks,
                const xpd::v1::PlacementStatusResponse* group) {
  json out = {{"controller", controller},   {"ranks", json::array()},
              {"ep_group", nullptr},        {"placement", nullptr},
              {"balance", nullptr},         {"layer_balance", json::array()},
              {"rank_load", json::array()}, {"hottest", json::array()},
              {"window_tokens", 0},         {"last_rebalance", nullptr}};
  for (const xpd::v1::RankInfo& rank : ranks.ranks()) out["ranks"].push_back(RankJson(rank));
  if (group == nullptr) return out;
  out["ep_group"] = group->ep_group();
  if (group->has_last_rebalance())
    out["last_rebalance"] = placement::RebalanceRecordToJson(group->last_rebalance());
  if (!group->has_placement()) return out;
  const xpd::v1::Placement& p = group->placement();
  json layers = json::array();
  for (const xpd::v1::LayerPlacement& layer : p.layers()) layers.push_back(layer.layer());
  out["placement"] = {{"epoch", p.epoch()},
                      {"num_ranks", p.num_ranks()},
                      {"num_experts", p.num_experts()},
                      {"slots_per_layer", p.slots_per_layer()},
                      {"layers", layers}};
  out["balance"] = group->balance();
  for (const xpd::v1::LayerBalance& l : group->layer_balance()) {
    out["layer_balance"].push_back({{"layer", l.layer()}, {"balance", l.balance()}});
  }
  for (const xpd::v1::RankExpertLoad& r : group->rank_load()) {
    out["rank_load"].push_back({{"rank", r.rank()}, {"tokens", r.tokens()}});
  }
  for (const xpd::v1::HotExpert& h : group->hottest()) {
    out["hottest"].push_back({{"layer", h.layer()},
                              {"expert", h.expert()},
                              {"tokens", h.tokens()},
                              {"replicas", h.replicas()}});
  }
  out["window_tokens"] = group->window_tokens();
  return out;
}

void PrintText(const std::string& controller, const xpd::v1::ListRanksResponse& ranks,
               const xpd::v1::PlacementStatusResponse* group) {
  int healthy = 0;
  for (const xpd::v1::RankInfo& rank : ranks.ranks()) healthy += rank.healthy();
  std::cout << absl::StrFormat("controller %s: %d ranks, %d healthy\n", controller,
                               ranks.ranks_size(), healthy);
  if (ranks.ranks_size() > 0) {
    std::cout << absl::StrFormat("  %-12s %-8s %-22s %4s %-7s %-10s %5s %15s %7s %6s\n", "ID",
                                 "ROLE", "ADDRESS", "RANK", "HEALTH", "EP_GROUP", "EPOCH",
                                 "KV_FREE/TOTAL", "RUNNING", "QUEUED");
  }
  for (const xpd::v1::RankInfo& rank : ranks.ranks()) {
    std::cout << absl::StrFormat(
        "  %-12s %-8s %-22s %4d %-7s %-10s %5d %15s %7d %6d\n", rank.rank_id(),
        RoleText(rank.role()), rank.address(), rank.rank(), rank.healthy() ? "up" : "down",
        rank.ep_group().empty() ? "-" : rank.ep_group(), rank.placement_epoch(),
        absl::StrCat(rank.load().kv_blocks_free(), "/", rank.load().kv_blocks_total()),
        rank.load().running_requests(), rank.load().queued_requests());
  }
  if (group == nullptr) {
    std::cout << "no EP group\n";
    return;
  }
  if (!group->has_placement()) {
    std::cout << absl::StrFormat("ep_group %s: no placement yet\n", group->ep_group());
  } else {
    const xpd::v1::Placement& p = group->placement();
    std::cout << absl::StrFormat(
        "ep_group %s: placement epoch %d, %d ranks, %d experts, %d slots per layer, %d MoE "
        "layers\n",
        group->ep_group(), p.epoch(), p.num_ranks(), p.num_experts(), p.slots_per_layer(),
        p.layers_size());
    std::cout << absl::StrFormat(
        "balance %.4f (busiest rank / mean) over %d token-expert assignments in the window\n",
        group->balance(), group->window_tokens());
    std::cout << "layer balance:";
    for (int i = 0; i < group->layer_balance_size(); ++i) {
      const xpd::v1::LayerBalance& l = group->layer_balance(i);
      std::cout << (i % 8 == 0 ? "\n " : "")
                << absl::StrFormat(" %3d:%.3f", l.layer(), l.balance());
    }
    std::cout << "\nrank load (token-expert assignments its slots served):";
    for (int i = 0; i < group->rank_load_size(); ++i) {
      const xpd::v1::RankExpertLoad& r = group->rank_load(i);
      std::cout << absl::StrFormat("%s rank %d: %d", i == 0 ? "" : ",", r.rank(), r.tokens());
    }
    std::cout << "\nhottest experts:" << (group->hottest_size() == 0 ? " none\n" : "\n");
    for (const xpd::v1::HotExpert& h : group->hottest()) {
      std::cout << absl::StrFormat("  layer %d expert %d: %d tokens, %d replica%s\n", h.layer(),
                                   h.expert(), h.tokens(), h.replicas(),
                                   h.replicas() == 1 ? "" : "s");
    }
  }
  if (group->has_last_rebalance()) {
    const xpd::v1::RebalanceRecord& r = group->last_rebalance();
    std::cout << absl::StrFormat(
        "last rebalance: %s at epoch %d, %s, %d bytes moved in %.3f s: %s\n", r.outcome(),
        r.epoch(), absl::FormatTime(absl::FromUnixMillis(r.unix_ms()), absl::UTCTimeZone()),
        r.bytes_moved(), r.duration_seconds(), r.reason());
  } else {
    std::cout << "last rebalance: none\n";
  }
}

absl::Status RunStatus(const std::vector<std::string>& args) {
  XPD_ASSIGN_OR_RETURN(
      CommandFlags flags,
      CommandFlags::Parse(args, {"controller", "ep-group", "format", "timeout"}, {}));
  XPD_ASSIGN_OR_RETURN(const std::string controller, flags.GetString("controller"));
  const std::string format = flags.GetString("format", "text");
  if (format != "text" && format != "json") {
    return absl::InvalidArgumentError("--format must be text or json");
  }
  XPD_ASSIGN_OR_RETURN(const double timeout, flags.GetDouble("timeout", 10));
  if (!(timeout > 0)) return absl::InvalidArgumentError("--timeout must be > 0 seconds");
  const auto deadline = absl::ToChronoTime(absl::Now() + absl::Seconds(timeout));
  auto stub = xpd::v1::Controller::NewStub(
      grpc::CreateChannel(controller, grpc::InsecureChannelCredentials()));

  xpd::v1::ListRanksResponse ranks;
  {
    grpc::ClientContext context;
    context.set_deadline(deadline);
    const grpc::Status status = stub->ListRanks(&context, xpd::v1::ListRanksRequest(), &ranks);
    if (!status.ok()) return RpcError(controller, "ListRanks", status);
  }
  xpd::v1::PlacementStatusRequest request;
  request.set_ep_group(flags.GetString("ep-group", ""));
  xpd::v1::PlacementStatusResponse group;
  grpc::ClientContext context;
  context.set_deadline(deadline);
  const grpc::Status status = stub->PlacementStatus(&context, request, &group);
  // No EP group at all is a normal cluster state unless one was asked for.
  const bool no_group =
      status.error_code() == grpc::StatusCode::NOT_FOUND && !flags.Has("ep-group");
  if (!status.ok() && !no_group) return RpcError(controller, "PlacementStatus", status);
  const xpd::v1::PlacementStatusResponse* shown = no_group ? nullptr : &group;
  if (format == "json") {
    std::cout << StatusJson(controller, ranks, shown).dump() << "\n";
  } else {
    PrintText(controller, ranks, shown);
  }
  return absl::OkStatus();
}

}  // namespace

int RunStatusCommand(const std::vector<std::string>& args) {
  return ExitStatus("status", RunStatus(args));
}

}  // namespace xpd::cli
