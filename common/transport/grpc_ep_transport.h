// EpTransport over gRPC: every rank of an expert-parallel group opens one
// client-streaming ExpertExchange.Exchange call to every peer and writes that
// peer's messages into it in order; each rank serves ExpertExchangeService on
// its own gRPC server and files what arrives into its EpMailbox. Semantics
// match InProcessEpHub's ranks, plus links that can break: a peer whose
// stream ends makes Receive from it fail with UNAVAILABLE at once.
//
// Lifetime (the server only holds a pointer to service()):
//   GrpcEpTransport transport("g", rank, size);
//   start a GrpcServer with transport.service() among its services;
//   transport.Connect(addresses_by_rank, deadline);   // every rank, any order
//   ... Send / Receive ...
//   transport.Shutdown();  // first: ends incoming streams, so the server
//   server.Shutdown();     // stops at once instead of waiting its grace
//   destroy the transport after the server.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/transport/ep_mailbox.h"
#include "common/transport/ep_transport.h"
#include "grpcpp/grpcpp.h"
#include "xpd/v1/cluster.grpc.pb.h"

namespace xpd::transport {

struct GrpcEpTransportOptions {
  // Largest serialized ExpertMessage this rank sends. Must not exceed the
  // peers' server receive limit (GrpcServerOptions::max_message_bytes, 64 MiB
  // by default): a message the receiver refuses kills the whole stream, so
  // Send refuses it first with RESOURCE_EXHAUSTED and the link stays up.
  int64_t max_message_bytes = 64 << 20;
  // How long Shutdown waits for peers to acknowledge the end of its streams
  // before cancelling them (a hung peer must not hang shutdown).
  absl::Duration shutdown_grace = absl::Seconds(2);
};

class GrpcEpTransport;

// The receiving side, registered on the rank's gRPC server. Each incoming
// stream occupies one server thread for its lifetime (size - 1 per rank).
class ExpertExchangeService final : public xpd::v1::ExpertExchange::Service {
 public:
  grpc::Status Exchange(grpc::ServerContext* context,
                        grpc::ServerReader<xpd::v1::ExpertMessage>* reader,
                        xpd::v1::ExchangeClosed* response) override;

 private:
  friend class GrpcEpTransport;
  explicit ExpertExchangeService(GrpcEpTransport* transport) : transport_(transport) {}
  GrpcEpTransport* const transport_;
};

class GrpcEpTransport final : public EpTransport {
 public:
  GrpcEpTransport(std::string ep_group, int32_t rank, int32_t size,
                  GrpcEpTransportOptions options = {});
  ~GrpcEpTransport() override;  // Shutdown()

  // Register on this rank's server before any peer connects.
  ExpertExchangeService* service() { return &service_; }

  // Opens the stream to every peer: `addresses` by rank (this rank's entry
  // is not used). Returns once every peer has accepted the hello, so both a
  // dead peer and a misconfigured one show up here: UNAVAILABLE naming the
  // rank and address when it is not reachable by `deadline`; the peer's code
  // (INVALID_ARGUMENT: other group or size) when it refuses; FAILED_PRECONDITION
  // when the address serves another rank. After an error, only Shutdown.
  absl::Status Connect(const std::vector<std::string>& addresses, absl::Time deadline);

  // Closes the outgoing streams (peers see a clean end), ends the incoming
  // ones and fails this rank's waiting and later Receives and Sends with
  // UNAVAILABLE. Idempotent; not concurrent with Connect.
  void Shutdown();

  int32_t rank() const override { return rank_; }
  int32_t size() const override { return size_; }
  // Blocks while gRPC flow control holds the peer's stream (back-pressure);
  // sends to different peers may run concurrently. `message.from_rank` is not
  // read: the receiver files it under this rank.
  absl::Status Send(int32_t peer, const xpd::v1::ExpertMessage& message) override;
  absl::StatusOr<xpd::v1::ExpertMessage> Receive(int32_t peer, int64_t step, int32_t layer,
                                                 EpMessageKind kind, absl::Time deadline) override;
  bool HasHeader(int64_t step) override { return mailbox_.HasHeader(step); }
  void set_on_arrival(std::function<void()> callback) override {
    mailbox_.set_on_arrival(std::move(callback));
  }

 private:
  friend class ExpertExchangeService;

  // This rank's outgoing stream to one peer.
  struct Link {
    std::string address;
    std::unique_ptr<xpd::v1::ExpertExchange::Stub> stub;
    grpc::ClientContext context;  // TryCancel is safe from any thread
    xpd::v1::ExchangeClosed closed;
    absl::Mutex mu;  // one writer at a time: sync gRPC streams are not thread-safe
    std::unique_ptr<grpc::ClientWriter<xpd::v1::ExpertMessage>> writer ABSL_GUARDED_BY(mu);
    absl::Status status ABSL_GUARDED_BY(mu);  // not OK once the stream is over
  };

  grpc::Status Serve(grpc::ServerContext* context,
                     grpc::ServerReader<xpd::v1::ExpertMessage>* reader);
  absl::Status OpenLink(int32_t peer, Link& link, absl::Time deadline);
  // Where `peer` serves, for messages: its Connect address, else the stream's.
  std::string PeerName(int32_t peer, const grpc::ServerContext& context);

  const std::string ep_group_;
  const int32_t rank_;
  const int32_t size_;
  const GrpcEpTransportOptions options_;
  EpMailbox mailbox_;
  ExpertExchangeService service_{this};
  std::vector<std::unique_ptr<Link>> links_;  // by rank; null for this rank

  absl::Mutex mu_;
  bool connected_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::string> addresses_ ABSL_GUARDED_BY(mu_);
  // Incoming streams being served, by sender, so Shutdown can end them.
  std::map<int32_t, grpc::ServerContext*> incoming_ ABSL_GUARDED_BY(mu_);
  // Senders that ever opened a stream: a second one would interleave with
  // the first and break per-peer order, so it is refused.
  std::set<int32_t> joined_ ABSL_GUARDED_BY(mu_);
};

}  // namespace xpd::transport
