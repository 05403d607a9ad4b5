// MoE dispatch/combine across an expert-parallel group (architecture.md,
// "Data plane"; spec §7.2). Each rank routes its own tokens; every MoE layer
// sends each token once to every rank holding one of its top-k experts,
// computes the experts this rank holds over its own and its peers' tokens in
// one grouped pass, returns each (token, expert) output unweighted, and sums
// the weighted outputs on the token's home rank in top-k order: the same
// floating-point sum as a single process, whatever the group size, replica
// or arrival order.
//
// Placement epochs switch inside the step header: a rank told to commit a
// prepared epoch announces it, and the group switches on the first step
// where every rank has announced it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/placement/expert_placement.h"
#include "common/transport/ep_transport.h"
#include "common/transport/expert_exchange.h"
#include "common/transport/step_group.h"

namespace xpd::transport {

struct EpGroupOptions {
  // A peer silent this long fails the step (it died or hangs); the rank's
  // requests get the error instead of waiting forever.
  absl::Duration timeout = absl::Seconds(60);
};

// One MoE layer's exchange, for metrics.
struct EpLayerTiming {
  int32_t layer = 0;
  double exchange_seconds = 0;  // wall time minus the local expert compute
  int64_t bytes_sent = 0;
  int64_t items_served = 0;  // (token, expert) pairs this rank's experts computed
};

class EpGroupExchange final : public ExpertExchange, public StepGroup {
 public:
  // `transport` is not owned. The placement must be valid for the group size.
  EpGroupExchange(EpTransport& transport, placement::ExpertPlacement placement,
                  EpGroupOptions options = {});
  ~EpGroupExchange() override;

  int32_t rank() const { return transport_.rank(); }
  int32_t size() const { return transport_.size(); }

  // StepGroup (the step thread).
  bool StepRequested() override;
  absl::StatusOr<StepPlan> BeginStep(bool has_work) override;
  void set_wake(std::function<void()> wake) override;

  // ExpertExchange (the step thread, after BeginStep).
  absl::Status DispatchCombine(const MoeExchangeArgs& args,
                               const ExpertCompute& compute_local) override;

  // Rollout, from any thread. Stage keeps `next` ready (its experts already
  // loaded by the caller); RequestCommit announces it in the next header;
  // WaitForEpoch blocks until the group switched; Abort drops a staged epoch
  // that has not been committed.
  absl::Status Stage(placement::ExpertPlacement next);
  absl::Status RequestCommit(int64_t epoch);
  absl::Status WaitForEpoch(int64_t epoch, absl::Time deadline);
  absl::Status Abort(int64_t epoch);
  // Runs on the step thread right after a switch, before the step computes:
  // the place to free the experts the rank no longer holds.
  void set_on_switch(std::function<void(const placement::ExpertPlacement& before,
                                        const placement::ExpertPlacement& after)>
                         on_switch);
  void set_on_layer(std::function<void(const EpLayerTiming&)> on_layer);

  placement::ExpertPlacement placement() const;
  std::optional<placement::ExpertPlacement> staged() const;
  int64_t epoch() const;
  // (token, expert) pairs this rank's own tokens routed to each logical
  // expert since the previous call: [moe layer][expert] flattened, with the
  // epoch they were counted in.
  std::vector<int64_t> TakeExpertLoad(int64_t* epoch);

 private:
  struct Inbound;
  struct Current {
    placement::ExpertPlacement placement;
    placement::ReplicaIndex replicas;
    std::vector<std::vector<bool>> held;  // [moe layer][expert] on this rank
  };
  void Wake();
  static std::shared_ptr<const Current> MakeCurrent(placement::ExpertPlacement placement,
                                                    int32_t rank);
  std::shared_ptr<const Current> current() const;

  EpTransport& transport_;
  const EpGroupOptions options_;
  int64_t step_ = 0;  // the next step to open (step thread only)
  std::function<void(const placement::ExpertPlacement&, const placement::ExpertPlacement&)>
      on_switch_;
  std::function<void(const EpLayerTiming&)> on_layer_;

  mutable absl::Mutex mu_;
  std::shared_ptr<const Current> current_ ABSL_GUARDED_BY(mu_);
  std::optional<placement::ExpertPlacement> staged_ ABSL_GUARDED_BY(mu_);
  int64_t commit_epoch_ ABSL_GUARDED_BY(mu_) = 0;     // newest epoch told to commit
  int64_t announced_epoch_ ABSL_GUARDED_BY(mu_) = 0;  // newest ready_epoch sent
  absl::Mutex wake_mu_;  // never held with mu_: wake_ takes the scheduler's lock
  std::function<void()> wake_ ABSL_GUARDED_BY(wake_mu_);

  absl::Mutex load_mu_;
  int64_t load_epoch_ ABSL_GUARDED_BY(load_mu_) = 0;
  std::vector<int64_t> load_ ABSL_GUARDED_BY(load_mu_);
};

}  // namespace xpd::transport
