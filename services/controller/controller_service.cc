#include "services/controller/controller_service.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/rpc/status_conversion.h"

namespace xpd::controller {
namespace {

using xpd::v1::Role;

constexpr Role kRoles[] = {xpd::v1::ROLE_ROUTER, xpd::v1::ROLE_PREFILL, xpd::v1::ROLE_DECODE};

// The service's own manager when none is given: in memory, default policy.
std::unique_ptr<PlacementManager> DefaultPlacement(const ControllerOptions& options) {
  if (options.placement != nullptr) return nullptr;
  return *PlacementManager::Create({.clock = options.clock,
                                    .registry = options.registry,
                                    .metric_labels = options.metric_labels});
}

}  // namespace

std::string RoleName(Role role) {
  std::string name = xpd::v1::Role_Name(role);
  constexpr std::string_view kPrefix = "ROLE_";
  if (name.rfind(kPrefix, 0) == 0) name.erase(0, kPrefix.size());
  return absl::AsciiStrToLower(name);
}

ControllerService::ControllerService(ControllerOptions options)
    : options_(std::move(options)),
      down_after_(options_.down_after > absl::ZeroDuration() ? options_.down_after
                                                             : 3 * options_.heartbeat_interval),
      owned_placement_(DefaultPlacement(options_)),
      placement_(options_.placement != nullptr ? options_.placement : owned_placement_.get()) {
  placement_->SetRankSource([this] { return Ranks(); });
  if (options_.registry == nullptr) return;
  // The ranks' own role is `rank_role`: `role` stays the controller's, like
  // every other series it exports, so {role="decode"} selects decode ranks only.
  ranks_gauge_ = &prometheus::BuildGauge()
                      .Name("xpd_ranks")
                      .Help("Registered ranks by state (healthy|down) and rank_role.")
                      .Labels(options_.metric_labels)
                      .Register(*options_.registry);
  heartbeats_ = &prometheus::BuildCounter()
                     .Name("xpd_controller_heartbeats_total")
                     .Help("Heartbeats received from ranks.")
                     .Labels(options_.metric_labels)
                     .Register(*options_.registry)
                     .Add({});
  absl::MutexLock lock(&mu_);
  RefreshMetricsLocked(Now());
}

ControllerService::~ControllerService() {
  // The manager may outlive this service; it must stop asking it for ranks.
  placement_->SetRankSource(nullptr);
}

absl::Time ControllerService::Now() const {
  return options_.clock ? options_.clock() : absl::Now();
}

bool ControllerService::IsHealthy(const Entry& entry, absl::Time now) const {
  return now - entry.last_heartbeat <= down_after_;
}

xpd::v1::RankInfo ControllerService::Snapshot(const Entry& entry, absl::Time now) const {
  xpd::v1::RankInfo info = entry.info;
  info.set_healthy(IsHealthy(entry, now));
  return info;
}

grpc::Status ControllerService::Register(grpc::ServerContext* context,
                                         const xpd::v1::RegisterRequest* request,
                                         xpd::v1::RegisterResponse* response) {
  const Role role = request->role();
  if (role == xpd::v1::ROLE_UNSPECIFIED || !xpd::v1::Role_IsValid(role)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "role: must be router, prefill or decode");
  }
  if (request->address().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "address: must not be empty");
  }
  if (request->rank() < 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "rank: must be >= 0");
  }
  absl::MutexLock lock(&mu_);
  const absl::Time now = Now();
  // A rank restarted at the same address takes its old id back.
  std::string id;
  for (const auto& [existing_id, entry] : ranks_) {
    if (entry.info.role() == role && entry.info.address() == request->address()) id = existing_id;
  }
  if (id.empty()) {
    const std::string prefix = RoleName(role) + "-";
    id = absl::StrCat(prefix, request->rank());
    for (int n = 0; ranks_.contains(id); ++n) id = absl::StrCat(prefix, n);
  }
  Entry& entry = ranks_[id];
  entry.info.set_rank_id(id);
  entry.info.set_role(role);
  entry.info.set_address(request->address());
  entry.info.set_rank(request->rank());
  *entry.info.mutable_load() = request->load();
  entry.info.set_ep_group(request->ep_group());
  entry.info.set_placement_epoch(request->placement_epoch());
  entry.info.set_last_heartbeat_unix_ms(absl::ToUnixMillis(now));
  entry.last_heartbeat = now;
  response->set_rank_id(id);
  response->set_heartbeat_interval_ms(absl::ToInt64Milliseconds(options_.heartbeat_interval));
  RefreshMetricsLocked(now);
  return grpc::Status::OK;
}

grpc::Status ControllerService::Heartbeat(grpc::ServerContext* context,
                                          const xpd::v1::HeartbeatRequest* request,
                                          xpd::v1::HeartbeatResponse* response) {
  std::string ep_group;
  {
    absl::MutexLock lock(&mu_);
    auto it = ranks_.find(request->rank_id());
    if (it == ranks_.end()) {
      return grpc::Status(
          grpc::StatusCode::NOT_FOUND,
          absl::StrCat("unknown rank_id '", request->rank_id(), "'; register again"));
    }
    const absl::Time now = Now();
    *it->second.info.mutable_load() = request->load();
    // The epoch its loads were counted on is the one the rank serves.
    if (request->has_expert_load()) {
      it->second.info.set_placement_epoch(request->expert_load().epoch());
    }
    it->second.info.set_last_heartbeat_unix_ms(absl::ToUnixMillis(now));
    it->second.last_heartbeat = now;
    ep_group = it->second.info.ep_group();
    if (heartbeats_ != nullptr) heartbeats_->Increment();
    RefreshMetricsLocked(now);
  }
  // Liveness above counts even when the load report below is refused.
  const xpd::v1::ExpertLoad& load = request->expert_load();
  if (load.layers_size() == 0 && load.tokens_size() == 0) return grpc::Status::OK;
  if (ep_group.empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("expert_load: rank '", request->rank_id(),
                                     "' registered without an ep_group"));
  }
  return rpc::ToGrpcStatus(placement_->ReportLoad(ep_group, load));
}

grpc::Status ControllerService::GetPlacement(grpc::ServerContext* context,
                                             const xpd::v1::GetPlacementRequest* request,
                                             xpd::v1::GetPlacementResponse* response) {
  return rpc::ToGrpcStatus(placement_->GetPlacement(*request, response));
}

grpc::Status ControllerService::JoinExpertGroup(grpc::ServerContext* context,
                                                const xpd::v1::JoinExpertGroupRequest* request,
                                                xpd::v1::JoinExpertGroupResponse* response) {
  // Answers a little before the caller's deadline, so that the caller gets
  // this DEADLINE_EXCEEDED naming the missing ranks rather than its own
  // transport's bare one.
  absl::Time deadline =
      context != nullptr ? absl::FromChrono(context->deadline()) : absl::InfiniteFuture();
  if (deadline != absl::InfiniteFuture()) {
    deadline -=
        std::clamp((deadline - absl::Now()) / 10, absl::ZeroDuration(), absl::Milliseconds(200));
  }
  const auto cancelled = [context] { return context != nullptr && context->IsCancelled(); };
  return rpc::ToGrpcStatus(placement_->JoinExpertGroup(*request, deadline, cancelled, response));
}

grpc::Status ControllerService::PlacementStatus(grpc::ServerContext* context,
                                                const xpd::v1::PlacementStatusRequest* request,
                                                xpd::v1::PlacementStatusResponse* response) {
  return rpc::ToGrpcStatus(placement_->PlacementStatus(*request, response));
}

grpc::Status ControllerService::Rebalance(grpc::ServerContext* context,
                                          const xpd::v1::RebalanceRequest* request,
                                          xpd::v1::RebalanceResponse* response) {
  return rpc::ToGrpcStatus(placement_->Rebalance(*request, response));
}

grpc::Status ControllerService::ListRanks(grpc::ServerContext* context,
                                          const xpd::v1::ListRanksRequest* request,
                                          xpd::v1::ListRanksResponse* response) {
  absl::MutexLock lock(&mu_);
  const absl::Time now = Now();
  for (const auto& [id, entry] : ranks_) {
    if (request->role() != xpd::v1::ROLE_UNSPECIFIED && entry.info.role() != request->role()) {
      continue;
    }
    if (request->healthy_only() && !IsHealthy(entry, now)) continue;
    *response->add_ranks() = Snapshot(entry, now);
  }
  RefreshMetricsLocked(now);
  return grpc::Status::OK;
}

std::vector<xpd::v1::RankInfo> ControllerService::Ranks() const {
  absl::MutexLock lock(&mu_);
  const absl::Time now = Now();
  std::vector<xpd::v1::RankInfo> ranks;
  ranks.reserve(ranks_.size());
  for (const auto& [id, entry] : ranks_) ranks.push_back(Snapshot(entry, now));
  return ranks;
}

void ControllerService::RefreshMetrics() {
  {
    absl::MutexLock lock(&mu_);
    RefreshMetricsLocked(Now());
  }
  placement_->RefreshMetrics();
}

void ControllerService::RefreshMetricsLocked(absl::Time now) {
  if (ranks_gauge_ == nullptr) return;
  std::map<std::pair<Role, bool>, int> counts;
  for (const auto& [id, entry] : ranks_) ++counts[{entry.info.role(), IsHealthy(entry, now)}];
  for (Role role : kRoles) {
    for (bool healthy : {true, false}) {
      ranks_gauge_->Add({{"state", healthy ? "healthy" : "down"}, {"rank_role", RoleName(role)}})
          .Set(counts[{role, healthy}]);
    }
  }
}

}  // namespace xpd::controller
