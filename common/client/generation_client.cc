#include "common/client/generation_client.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/rpc/status_conversion.h"

namespace xpd::client {
namespace {

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target,
                                           const ClientOptions& options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  // Reconnect promptly once the server is back (the default backs off to 2 min).
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

void Append(const xpd::v1::GenerateResponse& response, GenerateResult* result) {
  if (result->request_id.empty()) result->request_id = response.request_id();
  result->token_ids.insert(result->token_ids.end(), response.token_ids().begin(),
                           response.token_ids().end());
  result->text += response.text();
  result->logprobs.insert(result->logprobs.end(), response.logprobs().begin(),
                          response.logprobs().end());
  if (response.finish_reason() != xpd::v1::FINISH_REASON_UNSPECIFIED) {
    result->finish_reason = response.finish_reason();
  }
  if (response.has_usage()) result->usage = response.usage();
}

}  // namespace

absl::StatusOr<std::unique_ptr<GenerationClient>> GenerationClient::Create(
    const std::string& target, ClientOptions options) {
  if (target.empty()) return absl::InvalidArgumentError("target: empty; expected host:port");
  if (options.max_retries < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_retries: must be >= 0, got ", options.max_retries));
  }
  auto channel = MakeChannel(target, options);
  return std::make_unique<GenerationClient>(std::move(channel), std::move(options));
}

GenerationClient::GenerationClient(std::shared_ptr<grpc::Channel> channel, ClientOptions options)
    : options_(std::move(options)),
      channel_(std::move(channel)),
      stub_(xpd::v1::Generation::NewStub(channel_)) {}

std::unique_ptr<GenerationStream> GenerationClient::StartGenerate(
    const xpd::v1::GenerateRequest& request, const CallOptions& call) {
  return std::unique_ptr<GenerationStream>(
      new GenerationStream(stub_.get(), request, options_, CallDeadline(options_, call)));
}

absl::Status GenerationClient::GenerateStream(
    const xpd::v1::GenerateRequest& request,
    const std::function<bool(const xpd::v1::GenerateResponse&)>& on_response,
    const CallOptions& call) {
  std::unique_ptr<GenerationStream> stream = StartGenerate(request, call);
  xpd::v1::GenerateResponse response;
  while (stream->Next(&response)) {
    if (!on_response(response)) {
      stream->Cancel();
      return absl::CancelledError("generation cancelled by the caller");
    }
  }
  return stream->Finish();
}

absl::StatusOr<GenerateResult> GenerationClient::Generate(const xpd::v1::GenerateRequest& request,
                                                          const CallOptions& call) {
  GenerateResult result;
  absl::Status status = GenerateStream(
      request,
      [&result](const xpd::v1::GenerateResponse& response) {
        Append(response, &result);
        return true;
      },
      call);
  if (!status.ok()) return status;
  return result;
}

template <typename Request, typename Response>
absl::StatusOr<Response> GenerationClient::Unary(
    grpc::Status (xpd::v1::Generation::Stub::*method)(grpc::ClientContext*, const Request&,
                                                      Response*),
    const Request& request, const CallOptions& call) {
  const absl::Time deadline = CallDeadline(options_, call);
  for (int retry = 0;; ++retry) {
    grpc::ClientContext context;
    if (deadline != absl::InfiniteFuture()) context.set_deadline(absl::ToChronoTime(deadline));
    Response response;
    const grpc::Status status = (stub_.get()->*method)(&context, request, &response);
    if (status.ok()) return response;
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE || retry >= options_.max_retries) {
      return rpc::ToAbslStatus(status);
    }
    const absl::Duration backoff = RetryBackoff(options_, retry + 1);
    if (absl::Now() + backoff >= deadline) return rpc::ToAbslStatus(status);
    absl::SleepFor(backoff);
  }
}

absl::StatusOr<xpd::v1::TokenizeResponse> GenerationClient::Tokenize(
    const xpd::v1::TokenizeRequest& request, const CallOptions& call) {
  return Unary(&xpd::v1::Generation::Stub::Tokenize, request, call);
}

absl::StatusOr<xpd::v1::DetokenizeResponse> GenerationClient::Detokenize(
    const xpd::v1::DetokenizeRequest& request, const CallOptions& call) {
  return Unary(&xpd::v1::Generation::Stub::Detokenize, request, call);
}

absl::StatusOr<xpd::v1::ListModelsResponse> GenerationClient::ListModels(const CallOptions& call) {
  return Unary(&xpd::v1::Generation::Stub::ListModels, xpd::v1::ListModelsRequest(), call);
}

}  // namespace xpd::client
