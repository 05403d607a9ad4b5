// The controller's expert-parallel (EP) group state and its rebalancer. Per
// ep_group: the current placement (created from the shape the first rank
// reports, persisted to a PlacementStore), the members that joined, a window
// of the expert loads the ranks report, and the last rebalance. It answers
// the placement RPCs of xpd.v1.Controller and drives two-phase rollouts of
// rebalanced placements over the ranks' PlacementAgent services, on request
// (Rebalance) or on its own (auto mode).
//
// Concurrency: one rollout at a time per group; a Rebalance while one runs
// fails at once with ABORTED ("a rollout is in progress") rather than
// queueing behind a rollout that may take minutes. Rollout RPCs run without
// the state lock, so placement queries, joins and load reports continue.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/placement/expert_placement.h"
#include "common/placement/rebalance_policy.h"
#include "prometheus/registry.h"
#include "services/controller/expert_load_window.h"
#include "services/controller/placement_metrics.h"
#include "services/controller/placement_rollout.h"
#include "services/controller/placement_store.h"
#include "xpd/v1/cluster.pb.h"

namespace xpd::controller {

struct PlacementManagerOptions {
  // Where the groups' state survives restarts (--placement-file,
  // --placement-configmap); nullptr = in memory only. Shared so that options
  // stay copyable; used only under the manager's lock.
  std::shared_ptr<PlacementStore> store;
  // Extra physical slots per layer beyond num_experts for initial placements
  // (replicas of hot experts); num_experts + this must divide by num_ranks.
  int32_t redundant_experts = 0;
  absl::Duration load_window = absl::Seconds(60);
  // Bounds each rollout phase (all Prepares, then all Commits).
  absl::Duration rollout_timeout = absl::Seconds(120);
  bool auto_rebalance = false;
  absl::Duration rebalance_interval = absl::Seconds(10);
  // Auto mode's policy; `expert_bytes` comes from each group's shape and
  // `force` is set for Rebalance requests.
  placement::RebalancePolicy policy;
  placement::BalancerParams balancer;
  std::function<absl::Time()> clock;  // default absl::Now
  prometheus::Registry* registry = nullptr;
  prometheus::Labels metric_labels;
  // Called after every rollout (committed or aborted), outside the lock.
  std::function<void(const std::string& ep_group, const xpd::v1::RebalanceResponse&)> on_rollout;
};

class PlacementManager {
 public:
  // Loads options.store when given; its error (FAILED_PRECONDITION naming
  // the file or ConfigMap and the reason) stops the start. INVALID_ARGUMENT
  // for invalid options.
  static absl::StatusOr<std::unique_ptr<PlacementManager>> Create(PlacementManagerOptions options);
  ~PlacementManager();  // Shutdown()

  // The registry's ranks (for status, and the addresses of members that did
  // not join in this controller's lifetime). Called without this object's
  // lock held; nullptr detaches.
  using RankSource = std::function<std::vector<xpd::v1::RankInfo>()>;
  void SetRankSource(RankSource source);

  // The group's placement: the current (or persisted) one when its shape
  // matches, else a new initial placement; persisted before answering.
  // INVALID_ARGUMENT for an invalid shape, FAILED_PRECONDITION naming the
  // field when the shape disagrees with the one this group already has.
  absl::Status GetPlacement(const xpd::v1::GetPlacementRequest& request,
                            xpd::v1::GetPlacementResponse* response);
  // Blocks until all group_size ranks joined, `deadline` passes
  // (DEADLINE_EXCEEDED naming the missing ranks), `cancelled()` turns true
  // (CANCELLED) or Shutdown (UNAVAILABLE). A rank joining again replaces its
  // address. INVALID_ARGUMENT when group_size disagrees with the group.
  absl::Status JoinExpertGroup(const xpd::v1::JoinExpertGroupRequest& request, absl::Time deadline,
                               const std::function<bool()>& cancelled,
                               xpd::v1::JoinExpertGroupResponse* response);
  // Adds a rank's heartbeat report to its group's load window.
  // FAILED_PRECONDITION when the group has no placement yet,
  // INVALID_ARGUMENT when the report does not fit it (see AlignExpertLoad).
  absl::Status ReportLoad(const std::string& ep_group, const xpd::v1::ExpertLoad& load);
  // NOT_FOUND for an unknown group; an empty ep_group means the only group
  // (INVALID_ARGUMENT naming them when there are several).
  absl::Status PlacementStatus(const xpd::v1::PlacementStatusRequest& request,
                               xpd::v1::PlacementStatusResponse* response);
  // A forced plan (RebalancePolicy::force), rolled out unless dry_run.
  // Outcomes: planned / skipped (dry run), committed / aborted / skipped.
  // ABORTED while a rollout of the group runs; FAILED_PRECONDITION when the
  // group has no placement or a rank's address is unknown.
  absl::Status Rebalance(const xpd::v1::RebalanceRequest& request,
                         xpd::v1::RebalanceResponse* response);

  // Recomputes the balance gauges (the window ages without new reports).
  void RefreshMetrics();
  // Starts auto mode's thread when options.auto_rebalance; once.
  void StartAutoRebalance();
  // Stops auto mode, cancels rollouts in flight (they abort) and releases
  // blocked joins. Idempotent; the RPCs fail with UNAVAILABLE afterwards.
  void Shutdown();

 private:
  struct Group {
    // Established by the first GetPlacement in this controller's lifetime;
    // later requests must agree with it.
    std::optional<xpd::v1::PlacementShape> shape;
    std::optional<placement::ExpertPlacement> placement;
    int64_t expert_bytes = 0;
    int32_t group_size = 0;                    // from joins; 0 = nobody joined yet
    std::map<int32_t, std::string> members;    // rank -> address it joined with
    std::unique_ptr<ExpertLoadWindow> window;  // exists with `placement`
    std::optional<absl::Time> last_rollout;    // last committed rollout
    std::optional<xpd::v1::RebalanceRecord> last_rebalance;
    std::shared_ptr<PlacementRollout> rollout;  // set while one runs
  };

  explicit PlacementManager(PlacementManagerOptions options);

  absl::Time Now() const;
  std::vector<xpd::v1::RankInfo> RegistryRanks();
  absl::StatusOr<std::string> ResolveGroupLocked(const std::string& requested) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetPlacementLocked(const std::string& name, Group& group,
                          placement::ExpertPlacement placement) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PersistLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateBalanceLocked(const std::string& name, Group& group)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Where each rank of the group serves PlacementAgent: the address it
  // joined with, else (after a controller restart) the registry's healthy
  // rank of that group and index.
  absl::StatusOr<std::vector<std::string>> RolloutTargetsLocked(
      const std::string& name, const Group& group,
      const std::vector<xpd::v1::RankInfo>& ranks) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Plans for `requested` with `force`, and unless dry_run rolls out when
  // the plan says so. `record_skips`: whether a declined plan counts as a
  // rebalance (an operator's request) or not (auto mode's periodic check).
  absl::Status RebalanceGroup(const std::string& requested, bool dry_run, bool force,
                              bool record_skips, xpd::v1::RebalanceResponse* response);
  void AutoRebalanceLoop();

  const PlacementManagerOptions options_;
  PlacementMetrics metrics_;

  absl::Mutex source_mu_;
  RankSource rank_source_ ABSL_GUARDED_BY(source_mu_);

  absl::Mutex mu_;
  absl::CondVar joined_;                                      // a member joined, or shutdown
  std::map<std::string, Group> groups_ ABSL_GUARDED_BY(mu_);  // never erased
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  std::thread auto_thread_;  // started once by StartAutoRebalance
};

}  // namespace xpd::controller
