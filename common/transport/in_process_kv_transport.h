// KvTransport within one process: addresses name KvSinks registered here.
// Send delivers the payload in chunks of whole tokens (WriteKv per chunk,
// then CompleteKv), exactly as the gRPC transport does, so tests and
// single-process deployments exercise the same sink protocol.
#pragma once

#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/transport/kv_chunking.h"
#include "common/transport/kv_transport.h"

namespace xpd::transport {

class InProcessKvTransport final : public KvTransport {
 public:
  explicit InProcessKvTransport(int64_t chunk_bytes = kDefaultKvChunkBytes);

  // Routes Send(address, ...) to `sink` (not owned) until Unregister, which
  // waits for Sends in progress.
  void Register(const std::string& address, KvSink* sink);
  void Unregister(const std::string& address);

  // UNAVAILABLE naming the address when nothing is registered there;
  // INVALID_ARGUMENT for a malformed payload; a sink error keeps its code.
  absl::StatusOr<int64_t> Send(const std::string& address, const std::string& request_id,
                               const KvPayload& payload, absl::Time deadline) override;

 private:
  const int64_t chunk_bytes_;
  absl::Mutex mu_;
  std::map<std::string, KvSink*> sinks_ ABSL_GUARDED_BY(mu_);
};

}  // namespace xpd::transport
