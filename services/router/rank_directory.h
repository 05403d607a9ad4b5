// The router's view of live ranks: polls the controller's ListRanks in the
// background and picks a prefill rank (least outstanding prefill tokens) and
// a decode rank (most free KV blocks) for each request. Between polls it
// adjusts its copy with what it assigned itself, so a burst of requests
// spreads over ranks instead of piling onto the one that looked best.
#pragma once

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "xpd/v1/cluster.grpc.pb.h"

namespace xpd::router {

struct RankChoice {
  std::string rank_id;
  std::string address;
};

class RankDirectory {
 public:
  RankDirectory(std::string controller_address, absl::Duration poll_interval);
  ~RankDirectory();

  void Start();
  // Blocks until at least `prefill` prefill and `decode` decode ranks are
  // healthy, or the timeout passes (UNAVAILABLE).
  absl::Status WaitForRanks(int prefill, int decode, absl::Duration timeout);

  // UNAVAILABLE when no healthy rank of that role is known.
  absl::StatusOr<RankChoice> PickPrefill(int64_t prompt_tokens);
  absl::StatusOr<RankChoice> PickDecode(int64_t blocks_needed);
  // The largest KV cache (in blocks) of a healthy decode rank; 0 when none is known.
  int64_t MaxDecodeKvBlocks();
  // Undo PickPrefill's local accounting once the prefill finished or failed.
  void PrefillDone(const std::string& rank_id, int64_t prompt_tokens);

 private:
  void PollLoop();
  absl::Status PollOnce();

  std::string controller_address_;
  absl::Duration poll_interval_;
  std::unique_ptr<xpd::v1::Controller::Stub> stub_;
  absl::Mutex mutex_;
  std::vector<xpd::v1::RankInfo> prefill_ ABSL_GUARDED_BY(mutex_);
  std::vector<xpd::v1::RankInfo> decode_ ABSL_GUARDED_BY(mutex_);
  bool stop_ ABSL_GUARDED_BY(mutex_) = false;
  std::unique_ptr<std::thread> thread_;
};

}  // namespace xpd::router
