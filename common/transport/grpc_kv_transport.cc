#include "common/transport/grpc_kv_transport.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/base/status_macros.h"
#include "common/rpc/status_conversion.h"
#include "grpcpp/grpcpp.h"

namespace xpd::transport {
namespace {

// KvChunk.data is float32 little-endian; rows are copied as raw bytes.
static_assert(std::endian::native == std::endian::little, "KV rows are sent as raw little-endian");

using xpd::v1::KvChunk;

absl::Status WithAddress(const grpc::Status& status, const std::string& address) {
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      return absl::UnavailableError(
          absl::StrCat("decode rank at ", address, " is unavailable: ", status.error_message()));
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return absl::DeadlineExceededError(
          absl::StrCat("KV transfer to ", address, ": deadline exceeded"));
    default: {
      const absl::Status converted = rpc::ToAbslStatus(status);
      return absl::Status(converted.code(),
                          absl::StrCat("KV transfer to ", address, ": ", converted.message()));
    }
  }
}

grpc::Status Invalid(const std::string& message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message);
}

}  // namespace

GrpcKvTransport::GrpcKvTransport(GrpcKvTransportOptions options) : options_(options) {}

xpd::v1::KvTransfer::Stub* GrpcKvTransport::StubFor(const std::string& address) {
  absl::MutexLock lock(&mu_);
  std::unique_ptr<xpd::v1::KvTransfer::Stub>& stub = stubs_[address];
  if (stub == nullptr) {
    grpc::ChannelArguments args;
    // A restarted decode rank becomes reachable again within about a second.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    args.SetMaxSendMessageSize(-1);
    stub = xpd::v1::KvTransfer::NewStub(
        grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
  }
  return stub.get();
}

absl::StatusOr<int64_t> GrpcKvTransport::Send(const std::string& address,
                                              const std::string& request_id,
                                              const KvPayload& payload, absl::Time deadline) {
  if (request_id.empty()) return absl::InvalidArgumentError("request_id: must not be empty");
  XPD_RETURN_IF_ERROR(ValidateKvPayload(payload));
  xpd::v1::KvTransfer::Stub* stub = StubFor(address);

  grpc::ClientContext context;
  if (deadline != absl::InfiniteFuture()) context.set_deadline(absl::ToChronoTime(deadline));
  xpd::v1::KvAck ack;
  std::unique_ptr<grpc::ClientWriter<KvChunk>> writer = stub->PushKv(&context, &ack);

  const int64_t tokens_per_chunk =
      TokensPerChunk(payload, std::max<int64_t>(1, options_.chunk_bytes));
  const int64_t token_bytes = int64_t{payload.num_layers} * payload.latent_dim * sizeof(float);
  int64_t first = 0;
  do {  // at least one chunk: the header, even for an empty transfer
    const int64_t count = std::min(tokens_per_chunk, payload.num_tokens - first);
    KvChunk chunk;
    if (first == 0) {
      chunk.set_request_id(request_id);
      chunk.set_num_tokens(static_cast<int32_t>(payload.num_tokens));
      chunk.set_num_layers(payload.num_layers);
      chunk.set_latent_dim(payload.latent_dim);
    }
    chunk.set_first_token(static_cast<int32_t>(first));
    chunk.set_token_count(static_cast<int32_t>(count));
    std::string* data = chunk.mutable_data();
    data->resize(count * token_bytes);
    GatherTokenRows(payload, first, count, data->data());
    if (!writer->Write(chunk)) break;  // the call ended early; Finish says why
    first += count;
  } while (first < payload.num_tokens);
  writer->WritesDone();
  const grpc::Status status = writer->Finish();
  if (!status.ok()) return WithAddress(status, address);
  return ack.bytes();
}

KvTransferService::KvTransferService(KvSink* sink) : sink_(sink) {}

grpc::Status KvTransferService::PushKv(grpc::ServerContext* context,
                                       grpc::ServerReader<KvChunk>* reader, xpd::v1::KvAck* ack) {
  KvChunk chunk;
  if (!reader->Read(&chunk)) {
    if (context->IsCancelled()) return grpc::Status::CANCELLED;
    return Invalid("KV stream: empty; the first chunk must carry the header");
  }
  const std::string request_id = chunk.request_id();
  const int64_t num_tokens = chunk.num_tokens();
  const int32_t num_layers = chunk.num_layers();
  const int32_t latent_dim = chunk.latent_dim();
  if (request_id.empty()) return Invalid("request_id: missing in the first chunk");
  if (num_tokens < 0) return Invalid(absl::StrCat("num_tokens: must be >= 0, got ", num_tokens));
  if (num_layers <= 0) return Invalid(absl::StrCat("num_layers: must be > 0, got ", num_layers));
  if (latent_dim <= 0) return Invalid(absl::StrCat("latent_dim: must be > 0, got ", latent_dim));

  const int64_t token_bytes = int64_t{num_layers} * latent_dim * sizeof(float);
  int64_t next_token = 0;
  int64_t bytes = 0;
  std::vector<float> rows;
  do {
    if (!chunk.request_id().empty() && chunk.request_id() != request_id) {
      return Invalid(absl::StrCat("request_id: '", chunk.request_id(), "' inside the stream of '",
                                  request_id, "'"));
    }
    if ((chunk.num_layers() != 0 && chunk.num_layers() != num_layers) ||
        (chunk.latent_dim() != 0 && chunk.latent_dim() != latent_dim) ||
        (chunk.num_tokens() != 0 && chunk.num_tokens() != num_tokens)) {
      return Invalid("num_layers/latent_dim/num_tokens: changed inside the stream of '" +
                     request_id + "'");
    }
    if (chunk.first_token() != next_token) {
      return Invalid(absl::StrCat("first_token: expected ", next_token, ", got ",
                                  chunk.first_token(), " (chunks must arrive in token order)"));
    }
    const int64_t count = chunk.token_count();
    if (count < 0 || next_token + count > num_tokens) {
      return Invalid(absl::StrCat("token_count: ", count, " at token ", next_token,
                                  " overruns num_tokens ", num_tokens));
    }
    if (static_cast<int64_t>(chunk.data().size()) != count * token_bytes) {
      return Invalid(absl::StrCat("data: ", chunk.data().size(), " bytes, expected ",
                                  count * token_bytes, " for ", count, " tokens"));
    }
    if (count > 0) {
      rows.resize(count * num_layers * latent_dim);
      std::memcpy(rows.data(), chunk.data().data(), chunk.data().size());
      const absl::Status status =
          sink_->WriteKv(request_id, next_token, count, num_layers, latent_dim, rows);
      if (!status.ok()) return rpc::ToGrpcStatus(status);
    }
    next_token += count;
    bytes += static_cast<int64_t>(chunk.data().size());
  } while (reader->Read(&chunk));

  if (context->IsCancelled()) return grpc::Status::CANCELLED;
  if (next_token != num_tokens) {
    return Invalid(absl::StrCat("num_tokens: the stream ended after ", next_token, " of ",
                                num_tokens, " tokens"));
  }
  if (const absl::Status status = sink_->CompleteKv(request_id, num_tokens); !status.ok()) {
    return rpc::ToGrpcStatus(status);
  }
  ack->set_bytes(bytes);
  return grpc::Status::OK;
}

}  // namespace xpd::transport
