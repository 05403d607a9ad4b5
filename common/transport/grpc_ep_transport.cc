#include "common/transport/grpc_ep_transport.h"

#include <atomic>
#include <climits>
#include <functional>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/rpc/status_conversion.h"

namespace xpd::transport {
namespace {

using xpd::v1::ExpertMessage;

// Server initial metadata that accepts a hello and says which rank the
// address serves, so a misordered address list fails Connect.
constexpr char kRankMetadata[] = "xpd-ep-rank";

// Runs `cancel` at `deadline` unless destroyed first. Blocking sync gRPC
// calls on a long-lived stream have no deadline of their own (a call deadline
// would end the stream), so this bounds the few that could wait on a hung peer.
class CancelAtDeadline {
 public:
  CancelAtDeadline(absl::Time deadline, std::function<void()> cancel)
      : thread_([this, deadline, cancel = std::move(cancel)] {
          if (!done_.WaitForNotificationWithDeadline(deadline)) {
            fired_ = true;
            cancel();
          }
        }) {}
  ~CancelAtDeadline() { Stop(); }
  // Returns whether `cancel` ran.
  bool Stop() {
    if (thread_.joinable()) {
      done_.Notify();
      thread_.join();
    }
    return fired_;
  }

 private:
  absl::Notification done_;
  std::atomic<bool> fired_{false};
  std::thread thread_;  // last: starts once the members above exist
};

std::string RankAt(int32_t peer, const std::string& address) {
  return absl::StrCat("expert-parallel rank ", peer, " at ", address);
}

// A peer's final status for its stream, named. Transport-level endings stay
// UNAVAILABLE (the link is gone); a refusal keeps the peer's code, since
// retrying cannot fix a misconfiguration.
absl::Status FromPeer(const grpc::Status& status, int32_t peer, const std::string& address) {
  const absl::Status converted = rpc::ToAbslStatus(status);
  switch (converted.code()) {
    case absl::StatusCode::kOk:
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kUnknown:
      return absl::UnavailableError(
          absl::StrCat(RankAt(peer, address), " is unavailable: stream closed (",
                       absl::StatusCodeToString(converted.code()), ": ", converted.message(), ")"));
    default:
      return absl::Status(converted.code(),
                          absl::StrCat(RankAt(peer, address), ": ", converted.message()));
  }
}

grpc::Status Invalid(const std::string& message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message);
}

}  // namespace

grpc::Status ExpertExchangeService::Exchange(grpc::ServerContext* context,
                                             grpc::ServerReader<ExpertMessage>* reader,
                                             xpd::v1::ExchangeClosed* /*response*/) {
  return transport_->Serve(context, reader);
}

GrpcEpTransport::GrpcEpTransport(std::string ep_group, int32_t rank, int32_t size,
                                 GrpcEpTransportOptions options)
    : ep_group_(std::move(ep_group)), rank_(rank), size_(size), options_(options), mailbox_(size) {
  links_.resize(size);
  for (int32_t peer = 0; peer < size; ++peer) {
    if (peer != rank) links_[peer] = std::make_unique<Link>();
  }
}

GrpcEpTransport::~GrpcEpTransport() { Shutdown(); }

absl::Status GrpcEpTransport::Connect(const std::vector<std::string>& addresses,
                                      absl::Time deadline) {
  if (static_cast<int32_t>(addresses.size()) != size_) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert-parallel group of ", size_, ": got ", addresses.size(), " addresses"));
  }
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return absl::FailedPreconditionError("expert-parallel transport: shut down");
    if (connected_) return absl::FailedPreconditionError("expert-parallel transport: connected");
    connected_ = true;
    addresses_ = addresses;
  }
  grpc::ChannelArguments args;
  // A peer that starts a moment after this rank is found within ~100 ms.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // One TCP connection per link: gRPC would otherwise share a connection
  // between channels of one process to the same address (ranks as threads of
  // one process, as in tests), serializing their streams on one socket.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetMaxSendMessageSize(
      options_.max_message_bytes > INT_MAX ? -1 : static_cast<int>(options_.max_message_bytes));
  // Create every channel and start connecting before waiting on any, so the
  // handshakes overlap instead of adding up.
  std::vector<std::shared_ptr<grpc::Channel>> channels(size_);
  for (int32_t peer = 0; peer < size_; ++peer) {
    if (peer == rank_) continue;
    channels[peer] =
        grpc::CreateCustomChannel(addresses[peer], grpc::InsecureChannelCredentials(), args);
    channels[peer]->GetState(/*try_to_connect=*/true);
    links_[peer]->address = addresses[peer];
    links_[peer]->stub = xpd::v1::ExpertExchange::NewStub(channels[peer]);
  }
  for (int32_t peer = 0; peer < size_; ++peer) {
    if (peer == rank_) continue;
    Link& link = *links_[peer];
    if (!channels[peer]->WaitForConnected(absl::ToChronoTime(deadline))) {
      const absl::Status status =
          absl::UnavailableError(absl::StrCat(RankAt(peer, link.address), ": not reachable"));
      absl::MutexLock lock(&link.mu);
      link.status = status;
      return status;
    }
    if (absl::Status status = OpenLink(peer, link, deadline); !status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status GrpcEpTransport::OpenLink(int32_t peer, Link& link, absl::Time deadline) {
  absl::MutexLock lock(&link.mu);
  ExpertMessage hello;
  hello.set_from_rank(rank_);
  hello.set_layer(-1);
  hello.mutable_hello()->set_ep_group(ep_group_);
  hello.mutable_hello()->set_group_size(size_);

  CancelAtDeadline watchdog(deadline, [&link] { link.context.TryCancel(); });
  link.writer = link.stub->Exchange(&link.context, &link.closed);
  // The peer answers the hello with initial metadata when it accepts it and
  // ends the call when it refuses; either way this returns.
  const bool written = link.writer->Write(hello);
  link.writer->WaitForInitialMetadata();
  const bool cancelled = watchdog.Stop();

  const std::multimap<grpc::string_ref, grpc::string_ref>& metadata =
      link.context.GetServerInitialMetadata();
  const auto it = metadata.find(kRankMetadata);
  if (written && !cancelled && it != metadata.end()) {
    const std::string served(it->second.data(), it->second.size());
    if (served == std::to_string(peer)) return absl::OkStatus();
    link.context.TryCancel();
    link.writer->Finish();
    link.writer.reset();
    link.status = absl::FailedPreconditionError(
        absl::StrCat(link.address, " serves expert-parallel rank ", served, ", not rank ", peer,
                     " (addresses must be ordered by rank)"));
    return link.status;
  }
  const grpc::Status finished = link.writer->Finish();
  link.writer.reset();
  link.status = cancelled ? absl::UnavailableError(absl::StrCat(RankAt(peer, link.address),
                                                                ": no answer to the hello in time"))
                          : FromPeer(finished, peer, link.address);
  return link.status;
}

absl::Status GrpcEpTransport::Send(int32_t peer, const ExpertMessage& message) {
  if (peer < 0 || peer >= size_ || peer == rank_) {
    return absl::InvalidArgumentError(absl::StrCat("no peer rank ", peer));
  }
  const size_t bytes = message.ByteSizeLong();
  if (static_cast<int64_t>(bytes) > options_.max_message_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("expert message of ", bytes, " bytes to rank ", peer, " exceeds the limit of ",
                     options_.max_message_bytes, " (the receiver's max gRPC message size)"));
  }
  Link& link = *links_[peer];
  absl::MutexLock lock(&link.mu);
  if (!link.status.ok()) return link.status;
  if (link.writer == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("expert-parallel transport: not connected to rank ", peer));
  }
  // Sync Write returns once gRPC has taken the message within the stream's
  // flow-control window, so a slow receiver slows this sender down.
  if (link.writer->Write(message)) return absl::OkStatus();
  // A failed Write means the call is over; Finish has its status at once.
  const grpc::Status finished = link.writer->Finish();
  link.writer.reset();
  link.status = FromPeer(finished, peer, link.address);
  if (link.status.code() != absl::StatusCode::kUnavailable) {
    // The interface promises UNAVAILABLE for a broken link; keep the reason.
    link.status = absl::UnavailableError(link.status.message());
  }
  return link.status;
}

absl::StatusOr<ExpertMessage> GrpcEpTransport::Receive(int32_t peer, int64_t step, int32_t layer,
                                                       EpMessageKind kind, absl::Time deadline) {
  if (peer < 0 || peer >= size_ || peer == rank_) {
    return absl::InvalidArgumentError(absl::StrCat("no peer rank ", peer));
  }
  return mailbox_.Take(peer, step, layer, kind, deadline);
}

void GrpcEpTransport::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    shut_down_ = true;  // refuses new incoming streams
  }
  // Waiting receivers learn first, and why.
  for (int32_t peer = 0; peer < size_; ++peer) {
    if (peer == rank_) continue;
    mailbox_.MarkBroken(peer, absl::UnavailableError(absl::StrCat("expert-parallel rank ", rank_,
                                                                  " (this rank) is shut down")));
  }
  // Outgoing streams end cleanly (WritesDone, then the peer's OK), so the
  // peers' handlers return and their servers can stop promptly.
  {
    CancelAtDeadline watchdog(absl::Now() + options_.shutdown_grace, [this] {
      for (const std::unique_ptr<Link>& link : links_) {
        if (link != nullptr) link->context.TryCancel();
      }
    });
    for (int32_t peer = 0; peer < size_; ++peer) {
      if (peer == rank_) continue;
      Link& link = *links_[peer];
      absl::MutexLock lock(&link.mu);
      if (link.writer != nullptr) {
        link.writer->WritesDone();
        link.writer->Finish();
        link.writer.reset();
      }
      if (link.status.ok()) {
        link.status = absl::UnavailableError(
            absl::StrCat("expert-parallel rank ", rank_, " (this rank) is shut down"));
      }
    }
  }
  // Incoming streams: their senders may still be running, so end them here.
  absl::MutexLock lock(&mu_);
  for (const auto& [peer, context] : incoming_) context->TryCancel();
  mu_.Await(absl::Condition(
      +[](std::map<int32_t, grpc::ServerContext*>* incoming) { return incoming->empty(); },
      &incoming_));
}

std::string GrpcEpTransport::PeerName(int32_t peer, const grpc::ServerContext& context) {
  absl::MutexLock lock(&mu_);
  if (!addresses_.empty()) return addresses_[peer];
  return context.peer();  // before Connect: where the stream came from
}

grpc::Status GrpcEpTransport::Serve(grpc::ServerContext* context,
                                    grpc::ServerReader<ExpertMessage>* reader) {
  ExpertMessage message;
  if (!reader->Read(&message)) {
    if (context->IsCancelled()) return grpc::Status::CANCELLED;
    return Invalid("expert exchange stream: empty; the first message must be a hello");
  }
  if (!message.has_hello()) {
    return Invalid("expert exchange stream: the first message must be a hello");
  }
  const xpd::v1::ExchangeHello& hello = message.hello();
  if (hello.ep_group() != ep_group_) {
    return Invalid(absl::StrCat("ep_group: '", hello.ep_group(), "' is not this rank's group '",
                                ep_group_, "'"));
  }
  if (hello.group_size() != size_) {
    return Invalid(absl::StrCat("group_size: ", hello.group_size(), " but group '", ep_group_,
                                "' has ", size_, " ranks"));
  }
  const int32_t from = message.from_rank();
  if (from < 0 || from >= size_ || from == rank_) {
    return Invalid(absl::StrCat("from_rank: ", from, " is not a peer of rank ", rank_,
                                " in a group of ", size_));
  }
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          absl::StrCat("expert-parallel rank ", rank_, " is shut down"));
    }
    if (!joined_.insert(from).second) {
      return grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                          absl::StrCat("expert-parallel rank ", from,
                                       " already opened its stream to rank ", rank_));
    }
    incoming_[from] = context;
  }
  context->AddInitialMetadata(kRankMetadata, std::to_string(rank_));
  reader->SendInitialMetadata();

  grpc::Status result = grpc::Status::OK;
  for (message.Clear(); reader->Read(&message); message.Clear()) {
    if (message.has_hello()) {
      result = Invalid("expert exchange stream: a second hello");
      break;
    }
    message.set_from_rank(from);  // the stream, not the payload, says who sent it
    if (absl::Status filed = mailbox_.Put(std::move(message)); !filed.ok()) {
      result = rpc::ToGrpcStatus(filed);
      break;
    }
  }
  std::string how;  // empty for a clean end (the peer shut down)
  if (!result.ok()) {
    how = absl::StrCat(" (", result.error_message(), ")");
  } else if (context->IsCancelled()) {
    how = " (stream broken)";
    result = grpc::Status::CANCELLED;
  }
  mailbox_.MarkBroken(
      from, absl::UnavailableError(absl::StrCat("expert-parallel rank ", from, " (",
                                                PeerName(from, *context), ") disconnected", how)));
  // Last touch of this object: Shutdown waits for incoming_ to empty.
  absl::MutexLock lock(&mu_);
  incoming_.erase(from);
  return result;
}

}  // namespace xpd::transport
