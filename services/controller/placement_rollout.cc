#include "services/controller/placement_rollout.h"

#include <memory>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "xpd/v1/cluster.grpc.pb.h"

namespace xpd::controller {
namespace {

// Aborts after a cancellation must not hold up shutdown for a whole timeout.
constexpr absl::Duration kCancelledAbortTimeout = absl::Seconds(2);

std::string Describe(const grpc::Status& status) {
  return absl::StrCat(absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())),
                      ": ", status.error_message());
}

}  // namespace

PlacementRollout::PlacementRollout(std::vector<std::string> addresses, absl::Duration timeout)
    : addresses_(std::move(addresses)), timeout_(timeout) {}

void PlacementRollout::Cancel() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
  for (grpc::ClientContext* context : in_flight_) context->TryCancel();
}

PlacementRollout::CallResult PlacementRollout::CallOne(Phase phase, int rank,
                                                       const xpd::v1::Placement& proposed) {
  grpc::ClientContext context;
  absl::Duration timeout = timeout_;
  {
    absl::MutexLock lock(&mu_);
    if (cancelled_) {
      if (phase != Phase::kAbort) {
        return {.status = grpc::Status(grpc::StatusCode::CANCELLED, "rollout cancelled")};
      }
      timeout = std::min(timeout, kCancelledAbortTimeout);
    } else if (phase != Phase::kAbort) {
      in_flight_.insert(&context);
    }
  }
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  // Fresh channels: rollouts are rare, and a rank restarted on the same
  // address must not be reached through a stale connection.
  auto stub = xpd::v1::PlacementAgent::NewStub(
      grpc::CreateChannel(addresses_[rank], grpc::InsecureChannelCredentials()));
  CallResult result;
  switch (phase) {
    case Phase::kPrepare: {
      xpd::v1::PrepareRequest request;
      *request.mutable_placement() = proposed;
      xpd::v1::PrepareResponse response;
      result.status = stub->Prepare(&context, request, &response);
      result.bytes_loaded = response.bytes_loaded();
      break;
    }
    case Phase::kCommit: {
      xpd::v1::CommitRequest request;
      request.set_epoch(proposed.epoch());
      xpd::v1::CommitResponse response;
      result.status = stub->Commit(&context, request, &response);
      break;
    }
    case Phase::kAbort: {
      xpd::v1::AbortRequest request;
      request.set_epoch(proposed.epoch());
      xpd::v1::AbortResponse response;
      result.status = stub->Abort(&context, request, &response);
      break;
    }
  }
  absl::MutexLock lock(&mu_);
  in_flight_.erase(&context);
  return result;
}

std::vector<PlacementRollout::CallResult> PlacementRollout::CallAll(
    Phase phase, const xpd::v1::Placement& proposed) {
  std::vector<CallResult> results(addresses_.size());
  std::vector<std::thread> threads;
  threads.reserve(addresses_.size());
  for (size_t rank = 0; rank < addresses_.size(); ++rank) {
    threads.emplace_back([this, phase, rank, &proposed, &results] {
      results[rank] = CallOne(phase, static_cast<int>(rank), proposed);
    });
  }
  for (std::thread& thread : threads) thread.join();
  return results;
}

RolloutResult PlacementRollout::Run(const xpd::v1::Placement& proposed) {
  RolloutResult result;
  const auto failures = [this](const char* call, const std::vector<CallResult>& results) {
    std::vector<std::string> failed;
    for (size_t rank = 0; rank < results.size(); ++rank) {
      if (results[rank].status.ok()) continue;
      failed.push_back(absl::StrCat(call, " failed on rank ", rank, " (", addresses_[rank],
                                    "): ", Describe(results[rank].status)));
    }
    return failed;
  };
  const auto abort_all = [&] {
    std::vector<std::string> failed = failures("Abort", CallAll(Phase::kAbort, proposed));
    if (!failed.empty()) absl::StrAppend(&result.reason, "; ", absl::StrJoin(failed, "; "));
  };

  const std::vector<CallResult> prepared = CallAll(Phase::kPrepare, proposed);
  for (const CallResult& r : prepared) result.bytes_loaded += r.bytes_loaded;
  if (std::vector<std::string> failed = failures("Prepare", prepared); !failed.empty()) {
    result.reason = absl::StrJoin(failed, "; ");
    abort_all();
    return result;
  }

  const std::vector<CallResult> committed = CallAll(Phase::kCommit, proposed);
  const std::vector<std::string> failed = failures("Commit", committed);
  if (failed.size() == committed.size() && !committed.empty()) {
    result.reason = absl::StrJoin(failed, "; ");
    abort_all();
    return result;
  }
  result.committed = true;
  result.reason = absl::StrJoin(failed, "; ");
  return result;
}

}  // namespace xpd::controller
