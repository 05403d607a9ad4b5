// Two-phase rollout of a new placement over an EP group's PlacementAgent
// services (one per rank): Prepare on every rank in parallel (each loads the
// experts it will newly hold while serving on the old epoch); if any fails,
// Abort on every rank and the old placement stays; otherwise Commit on every
// rank in parallel, each returning once that rank switched (the group
// switches together at a step boundary it agrees on).
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "xpd/v1/cluster.pb.h"

namespace xpd::controller {

struct RolloutResult {
  bool committed = false;
  // Why it aborted (naming the rank, its address and error), or the Commit
  // failures of a rollout that still committed.
  std::string reason;
  int64_t bytes_loaded = 0;  // sum of the ranks' PrepareResponse.bytes_loaded
};

class PlacementRollout {
 public:
  // `addresses` by rank; `timeout` bounds each phase's calls.
  PlacementRollout(std::vector<std::string> addresses, absl::Duration timeout);

  // Blocks until the rollout committed or aborted. When some Commits fail
  // but at least one succeeds, the group has switched (it switches together)
  // and the result is committed with the failures in `reason`: the failed
  // ranks are down or must restart, and then load the new placement. When
  // every Commit fails, nobody switched: Abort on every rank, aborted.
  RolloutResult Run(const xpd::v1::Placement& proposed);

  // From another thread (shutdown): cancels the calls in flight and fails
  // the ones not yet made, so Run returns promptly (aborted). The Abort calls
  // Run then makes are still sent, with a short deadline.
  void Cancel();

 private:
  struct CallResult {
    grpc::Status status;
    int64_t bytes_loaded = 0;
  };
  enum class Phase { kPrepare, kCommit, kAbort };

  // One call per rank, in parallel; results by rank.
  std::vector<CallResult> CallAll(Phase phase, const xpd::v1::Placement& proposed);
  CallResult CallOne(Phase phase, int rank, const xpd::v1::Placement& proposed);

  const std::vector<std::string> addresses_;
  const absl::Duration timeout_;

  absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::set<grpc::ClientContext*> in_flight_ ABSL_GUARDED_BY(mu_);
};

}  // namespace xpd::controller
