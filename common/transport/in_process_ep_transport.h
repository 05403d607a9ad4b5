// An EP group whose ranks are threads of one process: Send files the message
// straight into the peer's mailbox. For tests and single-host deployments.
#pragma once

#include <memory>
#include <vector>

#include "common/transport/ep_mailbox.h"
#include "common/transport/ep_transport.h"

namespace xpd::transport {

class InProcessEpHub {
 public:
  explicit InProcessEpHub(int32_t size);
  ~InProcessEpHub();
  // Rank r's end; owned by the hub, valid while it lives.
  EpTransport& rank(int32_t r);
  int32_t size() const { return static_cast<int32_t>(ranks_.size()); }

 private:
  class Rank;
  std::vector<std::unique_ptr<Rank>> ranks_;
};

}  // namespace xpd::transport
