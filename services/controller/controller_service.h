// The controller's rank registry (xpd.v1.Controller): ranks register with
// role, address and rank, then heartbeat with their load. A rank whose last
// heartbeat is older than `down_after` is reported unhealthy and skipped by
// ListRanks(healthy_only), so the router stops choosing it. The expert
// placement RPCs are answered by a PlacementManager; heartbeats carrying
// expert loads feed its load window.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "services/controller/placement_manager.h"
#include "xpd/v1/cluster.grpc.pb.h"

namespace xpd::controller {

struct ControllerOptions {
  absl::Duration heartbeat_interval = absl::Milliseconds(500);  // told to ranks
  absl::Duration down_after = absl::ZeroDuration();             // 0 = 3 x interval
  std::function<absl::Time()> clock;                            // default absl::Now
  // Optional metrics: xpd_ranks{state,rank_role} and xpd_controller_heartbeats_total.
  prometheus::Registry* registry = nullptr;
  prometheus::Labels metric_labels;  // constant labels (role, rank, model)
  // EP groups' placements; not owned, must outlive the service. nullptr: the
  // service keeps its own, in memory, with default options.
  PlacementManager* placement = nullptr;
};

class ControllerService : public xpd::v1::Controller::Service {
 public:
  explicit ControllerService(ControllerOptions options = {});
  ~ControllerService() override;

  grpc::Status Register(grpc::ServerContext* context, const xpd::v1::RegisterRequest* request,
                        xpd::v1::RegisterResponse* response) override;
  grpc::Status Heartbeat(grpc::ServerContext* context, const xpd::v1::HeartbeatRequest* request,
                         xpd::v1::HeartbeatResponse* response) override;
  grpc::Status ListRanks(grpc::ServerContext* context, const xpd::v1::ListRanksRequest* request,
                         xpd::v1::ListRanksResponse* response) override;
  grpc::Status GetPlacement(grpc::ServerContext* context,
                            const xpd::v1::GetPlacementRequest* request,
                            xpd::v1::GetPlacementResponse* response) override;
  grpc::Status JoinExpertGroup(grpc::ServerContext* context,
                               const xpd::v1::JoinExpertGroupRequest* request,
                               xpd::v1::JoinExpertGroupResponse* response) override;
  grpc::Status PlacementStatus(grpc::ServerContext* context,
                               const xpd::v1::PlacementStatusRequest* request,
                               xpd::v1::PlacementStatusResponse* response) override;
  grpc::Status Rebalance(grpc::ServerContext* context, const xpd::v1::RebalanceRequest* request,
                         xpd::v1::RebalanceResponse* response) override;

  // Every known rank with `healthy` evaluated now, sorted by rank id.
  std::vector<xpd::v1::RankInfo> Ranks() const;
  // Recomputes the xpd_ranks gauges (the RPCs do too) and the placement
  // balance gauges; call it periodically so the gauges follow ranks going
  // silent and the load window ageing.
  void RefreshMetrics();

 private:
  struct Entry {
    xpd::v1::RankInfo info;  // `healthy` is derived, not stored
    absl::Time last_heartbeat;
  };

  absl::Time Now() const;
  bool IsHealthy(const Entry& entry, absl::Time now) const;
  xpd::v1::RankInfo Snapshot(const Entry& entry, absl::Time now) const;
  void RefreshMetricsLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ControllerOptions options_;
  const absl::Duration down_after_;
  std::unique_ptr<PlacementManager> owned_placement_;  // when options_.placement is null
  PlacementManager* const placement_;

  mutable absl::Mutex mu_;
  std::map<std::string, Entry> ranks_ ABSL_GUARDED_BY(mu_);  // by rank id

  prometheus::Family<prometheus::Gauge>* ranks_gauge_ = nullptr;
  prometheus::Counter* heartbeats_ = nullptr;
};

// "prefill", "decode", "router" (lower-case role name without the prefix).
std::string RoleName(xpd::v1::Role role);

}  // namespace xpd::controller
