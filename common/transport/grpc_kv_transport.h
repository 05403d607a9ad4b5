// KvTransport over gRPC: the prefill side streams KvTransfer.PushKv chunks
// of whole tokens (gRPC flow control gives back-pressure); the decode side
// serves KvTransferService, which validates the stream and hands the rows to
// its KvSink.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/transport/kv_chunking.h"
#include "common/transport/kv_transport.h"
#include "xpd/v1/cluster.grpc.pb.h"

namespace xpd::transport {

struct GrpcKvTransportOptions {
  int64_t chunk_bytes = kDefaultKvChunkBytes;  // rows per message, rounded to whole tokens
};

class GrpcKvTransport final : public KvTransport {
 public:
  explicit GrpcKvTransport(GrpcKvTransportOptions options = {});

  // UNAVAILABLE naming the address when the decode rank cannot be reached;
  // DEADLINE_EXCEEDED past `deadline` (absl::InfiniteFuture() for none);
  // the receiver's status (code kept, address added) when it rejects the data.
  absl::StatusOr<int64_t> Send(const std::string& address, const std::string& request_id,
                               const KvPayload& payload, absl::Time deadline) override;

 private:
  xpd::v1::KvTransfer::Stub* StubFor(const std::string& address);

  const GrpcKvTransportOptions options_;
  absl::Mutex mu_;
  // One channel per decode rank, kept for the transport's lifetime.
  std::map<std::string, std::unique_ptr<xpd::v1::KvTransfer::Stub>> stubs_ ABSL_GUARDED_BY(mu_);
};

// The decode side of KvTransfer.PushKv. The first chunk carries the header
// (request_id, num_tokens, num_layers, latent_dim); chunks must arrive in
// token order. Errors: INVALID_ARGUMENT naming the field for a malformed
// stream; a KvSink error keeps its code (NOT_FOUND: no reservation).
class KvTransferService final : public xpd::v1::KvTransfer::Service {
 public:
  explicit KvTransferService(KvSink* sink);  // not owned

  grpc::Status PushKv(grpc::ServerContext* context, grpc::ServerReader<xpd::v1::KvChunk>* reader,
                      xpd::v1::KvAck* ack) override;

 private:
  KvSink* const sink_;
};

}  // namespace xpd::transport
