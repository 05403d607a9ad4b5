// Lockstep for a group of ranks that exchange data inside every step (an
// expert-parallel group): every rank runs every step, even with no tokens of
// its own, because its experts serve the others' tokens. A rank with work
// opens the next step; idle ranks wake when a peer does. Which rank has work
// and which placement epoch the step uses are agreed in the step header, so
// every rank decides the same way and none can wait on an absent peer.
#pragma once

#include <functional>

#include "absl/status/statusor.h"

namespace xpd::transport {

struct StepPlan {
  bool any_work = false;  // some rank has tokens: everyone runs the MoE layers
  bool switched = false;  // the placement epoch changed at this step
};

class StepGroup {
 public:
  virtual ~StepGroup() = default;
  // True when the group wants the next step run although this rank has no
  // work (a peer opened it, or this rank must announce an epoch switch).
  virtual bool StepRequested() = 0;
  // Exchanges step headers with every peer; the step's MoE exchanges follow.
  virtual absl::StatusOr<StepPlan> BeginStep(bool has_work) = 0;
  // Called when StepRequested may have turned true (from any thread, with no
  // lock of the group held).
  virtual void set_wake(std::function<void()> wake) = 0;
};

}  // namespace xpd::transport
