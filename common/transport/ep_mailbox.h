// Where a rank's incoming EP messages wait until its protocol asks for them.
// Shared by every EpTransport implementation.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <tuple>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/transport/ep_transport.h"

namespace xpd::transport {

class EpMailbox {
 public:
  explicit EpMailbox(int32_t group_size);

  // Files a message from `message.from_rank()`; INVALID_ARGUMENT for a sender
  // outside the group or a second copy of the same (step, layer, kind).
  absl::Status Put(xpd::v1::ExpertMessage message);
  absl::StatusOr<xpd::v1::ExpertMessage> Take(int32_t peer, int64_t step, int32_t layer,
                                              EpMessageKind kind, absl::Time deadline);
  bool HasHeader(int64_t step);
  // Every later Take from `peer` fails with `status` once its queue is empty.
  void MarkBroken(int32_t peer, absl::Status status);
  void set_on_arrival(std::function<void()> callback);

 private:
  using Key = std::tuple<int32_t, int64_t, int32_t, int>;  // peer, step, layer, kind

  const int32_t group_size_;
  std::function<void()> on_arrival_;
  absl::Mutex mu_;
  std::map<Key, xpd::v1::ExpertMessage> messages_ ABSL_GUARDED_BY(mu_);
  std::map<int32_t, absl::Status> broken_ ABSL_GUARDED_BY(mu_);
};

}  // namespace xpd::transport
