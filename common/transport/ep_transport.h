// The wire under an expert-parallel group: ordered messages between every
// pair of ranks, filed on arrival by (sender, step, layer, kind) so a rank
// can wait for exactly the message its protocol expects next. The group's
// exchange logic (EpGroupExchange) sits on top and never knows whether the
// peers are threads of this process (InProcessEpHub) or other processes
// (GrpcEpTransport); NCCL comes later behind the same interface.
#pragma once

#include <cstdint>
#include <functional>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "xpd/v1/cluster.pb.h"

namespace xpd::transport {

enum class EpMessageKind { kHeader, kDispatch, kCombine };

EpMessageKind KindOf(const xpd::v1::ExpertMessage& message);

class EpTransport {
 public:
  virtual ~EpTransport() = default;
  virtual int32_t rank() const = 0;
  virtual int32_t size() const = 0;
  // Sends to `peer` (never this rank); messages to one peer arrive in the
  // order sent. UNAVAILABLE naming the peer when its link is broken.
  virtual absl::Status Send(int32_t peer, const xpd::v1::ExpertMessage& message) = 0;
  // The message (step, layer, kind) from `peer`; DEADLINE_EXCEEDED naming the
  // peer when it has not arrived by `deadline`, UNAVAILABLE when the link died.
  virtual absl::StatusOr<xpd::v1::ExpertMessage> Receive(int32_t peer, int64_t step, int32_t layer,
                                                         EpMessageKind kind,
                                                         absl::Time deadline) = 0;
  // Whether some peer's header for `step` has arrived (it wants that step run).
  virtual bool HasHeader(int64_t step) = 0;
  // Called after every arrival, with no transport lock held; set before use.
  virtual void set_on_arrival(std::function<void()> callback) = 0;
};

}  // namespace xpd::transport
