#include "services/controller/placement_manager.h"

#include <algorithm>
#include <cmath>
#include <iostream>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/placement/balance.h"
#include "common/placement/placement_proto.h"

namespace xpd::controller {
namespace {

using placement::ExpertPlacement;

constexpr int kHottest = 10;
// How often a blocked JoinExpertGroup notices its client went away.
constexpr absl::Duration kJoinCancelPoll = absl::Milliseconds(100);

std::string Quoted(const std::string& name) { return absl::StrCat("'", name, "'"); }

absl::Status ValidateShape(const xpd::v1::PlacementShape& shape) {
  if (shape.num_ranks() < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("shape.num_ranks = ", shape.num_ranks(), " must be >= 1"));
  }
  if (shape.num_experts() < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("shape.num_experts = ", shape.num_experts(), " must be >= 1"));
  }
  for (int i = 0; i < shape.moe_layers_size(); ++i) {
    if (shape.moe_layers(i) < 0 || (i > 0 && shape.moe_layers(i) <= shape.moe_layers(i - 1))) {
      return absl::InvalidArgumentError(
          "shape.moe_layers must be non-negative and strictly ascending");
    }
  }
  if (shape.expert_bytes() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("shape.expert_bytes = ", shape.expert_bytes(), " must be >= 0"));
  }
  return absl::OkStatus();
}

std::string LayersText(const std::vector<int32_t>& layers) {
  return absl::StrCat("[", absl::StrJoin(layers, ","), "]");
}

// FAILED_PRECONDITION naming the first field where `request` disagrees with
// the shape the group was created from.
absl::Status CompareShape(const std::string& group, const xpd::v1::PlacementShape& have,
                          const xpd::v1::PlacementShape& request) {
  const auto mismatch = [&](const char* field, const std::string& got, const std::string& want) {
    return absl::FailedPreconditionError(absl::StrCat("shape.", field, " = ", got,
                                                      " disagrees with ep_group ", Quoted(group),
                                                      ", which has ", want));
  };
  if (request.num_ranks() != have.num_ranks()) {
    return mismatch("num_ranks", absl::StrCat(request.num_ranks()), absl::StrCat(have.num_ranks()));
  }
  if (request.num_experts() != have.num_experts()) {
    return mismatch("num_experts", absl::StrCat(request.num_experts()),
                    absl::StrCat(have.num_experts()));
  }
  const std::vector<int32_t> got(request.moe_layers().begin(), request.moe_layers().end());
  const std::vector<int32_t> want(have.moe_layers().begin(), have.moe_layers().end());
  if (got != want) return mismatch("moe_layers", LayersText(got), LayersText(want));
  if (request.expert_bytes() != have.expert_bytes()) {
    return mismatch("expert_bytes", absl::StrCat(request.expert_bytes()),
                    absl::StrCat(have.expert_bytes()));
  }
  return absl::OkStatus();
}

bool ShapeMatches(const ExpertPlacement& p, const xpd::v1::PlacementShape& shape) {
  return p.num_ranks == shape.num_ranks() && p.num_experts == shape.num_experts() &&
         std::equal(p.layers.begin(), p.layers.end(), shape.moe_layers().begin(),
                    shape.moe_layers().end());
}

}  // namespace

absl::StatusOr<std::unique_ptr<PlacementManager>> PlacementManager::Create(
    PlacementManagerOptions options) {
  if (options.redundant_experts < 0) {
    return absl::InvalidArgumentError("redundant experts must be >= 0");
  }
  if (options.load_window <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("load window must be > 0");
  }
  if (options.rollout_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("rollout timeout must be > 0");
  }
  if (options.rebalance_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("rebalance interval must be > 0");
  }
  if (options.balancer.num_groups < 1 || options.balancer.num_nodes < 1) {
    return absl::InvalidArgumentError("balancer groups and nodes must be >= 1");
  }
  StoredGroups stored;
  if (options.store != nullptr) {
    absl::StatusOr<StoredGroups> loaded = options.store->Load();
    if (!loaded.ok()) return loaded.status();
    stored = *std::move(loaded);
  }
  std::unique_ptr<PlacementManager> manager(new PlacementManager(std::move(options)));
  absl::MutexLock lock(&manager->mu_);
  for (auto& [name, entry] : stored) {
    Group& group = manager->groups_[name];
    group.expert_bytes = entry.expert_bytes;
    group.last_rollout = entry.last_rollout;
    group.last_rebalance = entry.last_rebalance;
    manager->SetPlacementLocked(name, group, std::move(entry.placement));
  }
  return manager;
}

PlacementManager::PlacementManager(PlacementManagerOptions options)
    : options_(std::move(options)), metrics_(options_.registry, options_.metric_labels) {}

PlacementManager::~PlacementManager() { Shutdown(); }

absl::Time PlacementManager::Now() const { return options_.clock ? options_.clock() : absl::Now(); }

void PlacementManager::SetRankSource(RankSource source) {
  absl::MutexLock lock(&source_mu_);
  rank_source_ = std::move(source);
}

std::vector<xpd::v1::RankInfo> PlacementManager::RegistryRanks() {
  absl::ReaderMutexLock lock(&source_mu_);
  return rank_source_ ? rank_source_() : std::vector<xpd::v1::RankInfo>{};
}

void PlacementManager::SetPlacementLocked(const std::string& name, Group& group,
                                          ExpertPlacement placement) {
  const bool same_shape = group.placement && group.window &&
                          group.placement->num_experts == placement.num_experts &&
                          group.placement->layers == placement.layers;
  group.placement = std::move(placement);
  // Loads are per logical expert: a new epoch of the same model keeps them.
  if (!same_shape) {
    group.window =
        std::make_unique<ExpertLoadWindow>(static_cast<int32_t>(group.placement->layers.size()),
                                           group.placement->num_experts, options_.load_window);
  }
  metrics_.SetEpoch(name, group.placement->epoch);
}

void PlacementManager::PersistLocked() {
  if (options_.store == nullptr) return;
  StoredGroups stored;
  for (const auto& [name, group] : groups_) {
    if (!group.placement) continue;
    stored[name] = StoredGroup{.placement = *group.placement,
                               .expert_bytes = group.expert_bytes,
                               .last_rollout = group.last_rollout,
                               .last_rebalance = group.last_rebalance};
  }
  // The in-memory state stays authoritative: ranks keep being served, and
  // the next change retries the write.
  if (absl::Status status = options_.store->Save(stored); !status.ok()) {
    std::cerr << "xpd-controller: " << status.message() << std::endl;
  }
}

absl::StatusOr<std::string> PlacementManager::ResolveGroupLocked(
    const std::string& requested) const {
  std::vector<std::string> names;
  for (const auto& [name, group] : groups_) names.push_back(Quoted(name));
  if (!requested.empty() || groups_.size() == 1) {
    const std::string name = requested.empty() ? groups_.begin()->first : requested;
    if (groups_.contains(name)) return name;
    return absl::NotFoundError(
        absl::StrCat("unknown ep_group ", Quoted(name),
                     " (known: ", names.empty() ? "none" : absl::StrJoin(names, ", "), ")"));
  }
  if (groups_.empty()) {
    return absl::NotFoundError("no EP group yet: no rank has asked for a placement");
  }
  return absl::InvalidArgumentError(
      absl::StrCat("ep_group is required: there are several (", absl::StrJoin(names, ", "), ")"));
}

absl::Status PlacementManager::GetPlacement(const xpd::v1::GetPlacementRequest& request,
                                            xpd::v1::GetPlacementResponse* response) {
  const xpd::v1::PlacementShape& shape = request.shape();
  if (absl::Status status = ValidateShape(shape); !status.ok()) return status;
  const std::string& name = request.ep_group();
  absl::MutexLock lock(&mu_);
  if (shut_down_) return absl::UnavailableError("the controller is shutting down");
  auto it = groups_.find(name);
  if (it != groups_.end() && it->second.shape) {
    if (absl::Status status = CompareShape(name, *it->second.shape, shape); !status.ok()) {
      return status;
    }
    *response->mutable_placement() = placement::ToProto(*it->second.placement);
    return absl::OkStatus();
  }
  if (it != groups_.end() && it->second.group_size != 0 &&
      it->second.group_size != shape.num_ranks()) {
    return absl::FailedPreconditionError(
        absl::StrCat("shape.num_ranks = ", shape.num_ranks(), " disagrees with ep_group ",
                     Quoted(name), ", joined with group_size ", it->second.group_size));
  }
  // A persisted placement of the same model is kept even when
  // --redundant-experts changed since: the flag shapes new placements only.
  const bool keep =
      it != groups_.end() && it->second.placement && ShapeMatches(*it->second.placement, shape);
  if (!keep) {
    const int64_t slots = int64_t{shape.num_experts()} + options_.redundant_experts;
    if (slots % shape.num_ranks() != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "shape.num_experts ", shape.num_experts(), " + --redundant-experts ",
          options_.redundant_experts, " = ", slots,
          " slots per layer is not a multiple of shape.num_ranks ", shape.num_ranks()));
    }
  }
  Group& group = groups_[name];
  if (!keep) {
    ExpertPlacement initial = placement::InitialPlacement(
        shape.num_ranks(), shape.num_experts(), options_.redundant_experts,
        {shape.moe_layers().begin(), shape.moe_layers().end()});
    // Epochs only grow, even when the model changed across a restart, so
    // that "newer epoch" keeps meaning newer everywhere.
    if (group.placement) initial.epoch = group.placement->epoch + 1;
    group.last_rollout.reset();
    SetPlacementLocked(name, group, std::move(initial));
  }
  group.shape = shape;
  group.expert_bytes = shape.expert_bytes();
  PersistLocked();
  *response->mutable_placement() = placement::ToProto(*group.placement);
  return absl::OkStatus();
}

absl::Status PlacementManager::JoinExpertGroup(const xpd::v1::JoinExpertGroupRequest& request,
                                               absl::Time deadline,
                                               const std::function<bool()>& cancelled,
                                               xpd::v1::JoinExpertGroupResponse* response) {
  const int32_t size = request.group_size();
  if (size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("group_size = ", size, " must be >= 1"));
  }
  if (request.rank() < 0 || request.rank() >= size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank = ", request.rank(), " is outside [0, group_size ", size, ")"));
  }
  if (request.address().empty()) return absl::InvalidArgumentError("address: must not be empty");
  const std::string& name = request.ep_group();
  absl::MutexLock lock(&mu_);
  if (shut_down_) return absl::UnavailableError("the controller is shutting down");
  Group& group = groups_[name];
  if (group.shape && group.shape->num_ranks() != size) {
    return absl::InvalidArgumentError(
        absl::StrCat("group_size = ", size, " disagrees with the placement of ep_group ",
                     Quoted(name), " (", group.shape->num_ranks(), " ranks)"));
  }
  if (group.group_size != 0 && group.group_size != size) {
    return absl::InvalidArgumentError(absl::StrCat("group_size = ", size,
                                                   " disagrees with ep_group ", Quoted(name),
                                                   ", joined with group_size ", group.group_size));
  }
  group.group_size = size;
  group.members[request.rank()] = request.address();
  joined_.SignalAll();
  while (static_cast<int32_t>(group.members.size()) < size && !shut_down_) {
    if (cancelled && cancelled()) return absl::CancelledError("the caller went away");
    const absl::Time now = absl::Now();
    if (now >= deadline) {
      std::vector<int32_t> missing;
      for (int32_t r = 0; r < size; ++r) {
        if (!group.members.contains(r)) missing.push_back(r);
      }
      return absl::DeadlineExceededError(
          absl::StrCat(group.members.size(), " of ", size, " ranks joined ep_group ", Quoted(name),
                       " before the deadline; missing ranks ", absl::StrJoin(missing, ",")));
    }
    joined_.WaitWithDeadline(&mu_, std::min(deadline, now + kJoinCancelPoll));
  }
  if (shut_down_) return absl::UnavailableError("the controller is shutting down");
  for (const auto& [rank, address] : group.members) response->add_addresses(address);
  return absl::OkStatus();
}

absl::Status PlacementManager::ReportLoad(const std::string& ep_group,
                                          const xpd::v1::ExpertLoad& load) {
  if (load.layers_size() == 0 && load.tokens_size() == 0) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  auto it = groups_.find(ep_group);
  if (it == groups_.end() || !it->second.placement) {
    return absl::FailedPreconditionError(absl::StrCat("expert_load: ep_group ", Quoted(ep_group),
                                                      " has no placement yet (call GetPlacement)"));
  }
  absl::StatusOr<std::vector<int64_t>> dense = AlignExpertLoad(*it->second.placement, load);
  if (!dense.ok()) return dense.status();
  it->second.window->Add(Now(), *dense);
  return absl::OkStatus();
}

void PlacementManager::UpdateBalanceLocked(const std::string& name, Group& group) {
  if (!group.placement) return;
  group.window->Expire(Now());
  absl::StatusOr<placement::PlacementBalance> balance =
      placement::EvaluateBalance(*group.placement, group.window->Loads());
  if (!balance.ok()) return;
  metrics_.SetBalance(name, balance->overall, group.placement->layers, balance->layer_balance,
                      group.window->total_tokens());
}

void PlacementManager::RefreshMetrics() {
  absl::MutexLock lock(&mu_);
  for (auto& [name, group] : groups_) UpdateBalanceLocked(name, group);
}

absl::Status PlacementManager::PlacementStatus(const xpd::v1::PlacementStatusRequest& request,
                                               xpd::v1::PlacementStatusResponse* response) {
  const std::vector<xpd::v1::RankInfo> ranks = RegistryRanks();
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::string> name = ResolveGroupLocked(request.ep_group());
  if (!name.ok()) return name.status();
  Group& group = groups_[*name];
  response->set_ep_group(*name);
  for (const xpd::v1::RankInfo& rank : ranks) {
    if (rank.ep_group() == *name) *response->add_ranks() = rank;
  }
  if (group.last_rebalance) *response->mutable_last_rebalance() = *group.last_rebalance;
  if (!group.placement) return absl::OkStatus();
  const ExpertPlacement& p = *group.placement;
  *response->mutable_placement() = placement::ToProto(p);

  group.window->Expire(Now());
  const placement::ExpertLoads loads = group.window->Loads();
  absl::StatusOr<placement::PlacementBalance> balance = placement::EvaluateBalance(p, loads);
  if (!balance.ok()) return absl::InternalError(balance.status().message());
  response->set_balance(balance->overall);
  for (size_t l = 0; l < p.layers.size(); ++l) {
    xpd::v1::LayerBalance* layer = response->add_layer_balance();
    layer->set_layer(p.layers[l]);
    layer->set_balance(balance->layer_balance[l]);
  }
  for (size_t r = 0; r < balance->rank_load.size(); ++r) {
    xpd::v1::RankExpertLoad* rank = response->add_rank_load();
    rank->set_rank(static_cast<int32_t>(r));
    rank->set_tokens(std::llround(balance->rank_load[r]));
  }
  // Hottest first; ties in (layer, expert) order so the list is stable.
  std::vector<std::tuple<int64_t, int32_t, int32_t>> hot;  // tokens, moe index, expert
  const std::vector<int64_t>& totals = group.window->totals();
  for (size_t l = 0; l < p.layers.size(); ++l) {
    for (int32_t e = 0; e < p.num_experts; ++e) {
      const int64_t tokens = totals[l * p.num_experts + e];
      if (tokens > 0) hot.emplace_back(tokens, static_cast<int32_t>(l), e);
    }
  }
  const size_t shown = std::min<size_t>(hot.size(), kHottest);
  std::partial_sort(hot.begin(), hot.begin() + shown, hot.end(), [](const auto& a, const auto& b) {
    if (std::get<0>(a) != std::get<0>(b)) return std::get<0>(a) > std::get<0>(b);
    return std::tie(std::get<1>(a), std::get<2>(a)) < std::tie(std::get<1>(b), std::get<2>(b));
  });
  const placement::ReplicaIndex replicas(p);
  for (size_t i = 0; i < shown; ++i) {
    const auto& [tokens, moe, expert] = hot[i];
    xpd::v1::HotExpert* h = response->add_hottest();
    h->set_layer(p.layers[moe]);
    h->set_expert(expert);
    h->set_tokens(tokens);
    h->set_replicas(static_cast<int32_t>(replicas.Slots(moe, expert).size()));
  }
  response->set_window_tokens(group.window->total_tokens());
  metrics_.SetBalance(*name, balance->overall, p.layers, balance->layer_balance,
                      group.window->total_tokens());
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> PlacementManager::RolloutTargetsLocked(
    const std::string& name, const Group& group,
    const std::vector<xpd::v1::RankInfo>& ranks) const {
  const int32_t n = group.placement->num_ranks;
  std::vector<std::string> targets(n);
  std::vector<int64_t> heartbeat(n, -1);
  for (const xpd::v1::RankInfo& rank : ranks) {
    if (rank.ep_group() != name || !rank.healthy() || rank.rank() < 0 || rank.rank() >= n) {
      continue;
    }
    // A restarted rank may have left a stale entry behind: take the freshest.
    if (rank.last_heartbeat_unix_ms() > heartbeat[rank.rank()]) {
      heartbeat[rank.rank()] = rank.last_heartbeat_unix_ms();
      targets[rank.rank()] = rank.address();
    }
  }
  if (group.group_size == n) {
    for (const auto& [rank, address] : group.members) targets[rank] = address;
  }
  for (int32_t r = 0; r < n; ++r) {
    if (targets[r].empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("ep_group ", Quoted(name), ": rank ", r, " of ", n,
                       " has neither joined nor registered as healthy; cannot roll out"));
    }
  }
  return targets;
}

absl::Status PlacementManager::Rebalance(const xpd::v1::RebalanceRequest& request,
                                         xpd::v1::RebalanceResponse* response) {
  return RebalanceGroup(request.ep_group(), request.dry_run(), /*force=*/true,
                        /*record_skips=*/!request.dry_run(), response);
}

absl::Status PlacementManager::RebalanceGroup(const std::string& requested, bool dry_run,
                                              bool force, bool record_skips,
                                              xpd::v1::RebalanceResponse* response) {
  const std::vector<xpd::v1::RankInfo> ranks =
      dry_run ? std::vector<xpd::v1::RankInfo>{} : RegistryRanks();
  std::string name;
  placement::RebalancePlan plan;
  std::shared_ptr<PlacementRollout> rollout;
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return absl::UnavailableError("the controller is shutting down");
    absl::StatusOr<std::string> resolved = ResolveGroupLocked(requested);
    if (!resolved.ok()) return resolved.status();
    name = *resolved;
    Group& group = groups_[name];
    if (!group.placement) {
      return absl::FailedPreconditionError(
          absl::StrCat("ep_group ", Quoted(name), " has no placement yet"));
    }
    if (group.rollout) {
      return absl::AbortedError(
          absl::StrCat("a rollout is in progress for ep_group ", Quoted(name)));
    }
    const absl::Time now = Now();
    group.window->Expire(now);
    placement::RebalancePolicy policy = options_.policy;
    policy.force = force;
    policy.expert_bytes = group.expert_bytes;
    absl::StatusOr<placement::RebalancePlan> planned = placement::PlanRebalance(
        *group.placement, group.window->Loads(), options_.balancer, policy,
        group.last_rollout ? now - *group.last_rollout : absl::InfiniteDuration());
    if (!planned.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("ep_group ", Quoted(name), ": cannot plan: ", planned.status().message()));
    }
    plan = *std::move(planned);
    response->set_epoch(group.placement->epoch);
    response->set_current_balance(plan.current_balance);
    response->set_predicted_balance(plan.predicted_balance);
    response->set_bytes_to_move(plan.bytes_to_move);
    *response->mutable_proposed() = placement::ToProto(plan.proposed);
    response->set_reason(plan.reason);
    if (dry_run) {
      response->set_outcome(plan.rebalance ? "planned" : "skipped");
      return absl::OkStatus();
    }
    if (!plan.rebalance) {
      response->set_outcome("skipped");
      if (record_skips) {
        xpd::v1::RebalanceRecord record;
        record.set_epoch(group.placement->epoch);
        record.set_outcome("skipped");
        record.set_reason(plan.reason);
        record.set_unix_ms(absl::ToUnixMillis(now));
        record.set_balance_before(plan.current_balance);
        record.set_balance_predicted(plan.predicted_balance);
        group.last_rebalance = record;
        metrics_.RecordRebalance(name, "skipped", /*ran=*/false, 0, 0);
        PersistLocked();
      }
      return absl::OkStatus();
    }
    absl::StatusOr<std::vector<std::string>> targets = RolloutTargetsLocked(name, group, ranks);
    if (!targets.ok()) return targets.status();
    rollout = std::make_shared<PlacementRollout>(*std::move(targets), options_.rollout_timeout);
    group.rollout = rollout;
  }

  const absl::Time start = absl::Now();
  const RolloutResult result = rollout->Run(placement::ToProto(plan.proposed));
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  {
    absl::MutexLock lock(&mu_);
    Group& group = groups_[name];
    group.rollout.reset();
    const absl::Time now = Now();
    xpd::v1::RebalanceRecord record;
    record.set_outcome(result.committed ? "committed" : "aborted");
    record.set_reason(
        result.committed
            ? (result.reason.empty() ? plan.reason : absl::StrCat(plan.reason, "; ", result.reason))
            : result.reason);
    record.set_duration_seconds(seconds);
    record.set_unix_ms(absl::ToUnixMillis(now));
    record.set_balance_before(plan.current_balance);
    record.set_balance_predicted(plan.predicted_balance);
    if (result.committed) {
      record.set_bytes_moved(plan.bytes_to_move);
      group.last_rollout = now;
      SetPlacementLocked(name, group, plan.proposed);
    }
    record.set_epoch(group.placement->epoch);
    group.last_rebalance = record;
    PersistLocked();
    metrics_.RecordRebalance(name, record.outcome(), /*ran=*/true, seconds, plan.bytes_to_move);
    UpdateBalanceLocked(name, group);
    response->set_outcome(record.outcome());
    response->set_reason(record.reason());
    response->set_epoch(record.epoch());
    response->set_duration_seconds(seconds);
  }
  std::cerr << "xpd-controller: ep_group " << Quoted(name) << ": rollout " << response->outcome()
            << " at epoch " << response->epoch() << " in " << seconds
            << " s: " << response->reason() << std::endl;
  if (options_.on_rollout) options_.on_rollout(name, *response);
  return absl::OkStatus();
}

void PlacementManager::StartAutoRebalance() {
  if (!options_.auto_rebalance || auto_thread_.joinable()) return;
  auto_thread_ = std::thread([this] { AutoRebalanceLoop(); });
}

void PlacementManager::AutoRebalanceLoop() {
  mu_.Lock();
  while (!shut_down_) {
    // Woken at once by Shutdown; otherwise one pass per interval.
    mu_.AwaitWithTimeout(absl::Condition(&shut_down_), options_.rebalance_interval);
    if (shut_down_) break;
    std::vector<std::string> names;
    for (const auto& [name, group] : groups_) {
      if (group.placement && !group.rollout) names.push_back(name);
    }
    mu_.Unlock();
    for (const std::string& name : names) {
      xpd::v1::RebalanceResponse response;
      // Errors are expected while groups form (ranks not all known yet) and
      // are retried next pass; a rollout's outcome is logged by RebalanceGroup.
      RebalanceGroup(name, /*dry_run=*/false, /*force=*/false, /*record_skips=*/false, &response)
          .IgnoreError();
    }
    mu_.Lock();
  }
  mu_.Unlock();
}

void PlacementManager::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    shut_down_ = true;
    for (auto& [name, group] : groups_) {
      if (group.rollout) group.rollout->Cancel();
    }
    joined_.SignalAll();
  }
  if (auto_thread_.joinable()) auto_thread_.join();
}

}  // namespace xpd::controller
