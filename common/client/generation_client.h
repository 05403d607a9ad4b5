// The C++ client SDK of the public xpd.v1.Generation service (the router).
//
//   XPD_ASSIGN_OR_RETURN(auto client, GenerationClient::Create("127.0.0.1:50051"));
//   xpd::v1::GenerateRequest request;
//   request.mutable_tokens()->add_ids(5);
//   request.mutable_sampling()->set_max_tokens(8);
//   XPD_ASSIGN_OR_RETURN(GenerateResult result, client->Generate(request));
//
// Every call has a deadline (CallOptions::timeout, else the client default)
// and is retried on UNAVAILABLE with exponential backoff as long as no
// response has arrived. Errors are the server's gRPC status as absl::Status.
// Thread-safe: one client may serve many concurrent calls.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/client/client_options.h"
#include "common/client/generation_stream.h"
#include "grpcpp/grpcpp.h"
#include "xpd/v1/generation.grpc.pb.h"

namespace xpd::client {

// A whole completion, gathered from the stream.
struct GenerateResult {
  std::string request_id;
  std::vector<int32_t> token_ids;
  std::string text;
  xpd::v1::FinishReason finish_reason = xpd::v1::FINISH_REASON_UNSPECIFIED;
  xpd::v1::Usage usage;
  std::vector<xpd::v1::TokenLogprob> logprobs;  // when sampling.logprobs was asked
};

class GenerationClient {
 public:
  // `target` is "host:port" (any gRPC target). Does not connect yet.
  static absl::StatusOr<std::unique_ptr<GenerationClient>> Create(const std::string& target,
                                                                  ClientOptions options = {});
  // Over an existing channel (custom credentials or channel arguments).
  GenerationClient(std::shared_ptr<grpc::Channel> channel, ClientOptions options = {});

  // Runs the stream to its end and returns everything it produced.
  absl::StatusOr<GenerateResult> Generate(const xpd::v1::GenerateRequest& request,
                                          const CallOptions& call = {});
  // Calls `on_response` for each response in order; returning false cancels
  // the call (the result is then CANCELLED).
  absl::Status GenerateStream(
      const xpd::v1::GenerateRequest& request,
      const std::function<bool(const xpd::v1::GenerateResponse&)>& on_response,
      const CallOptions& call = {});
  // The handle form: read with Next, cancel from any thread. The stream must
  // not outlive the client.
  std::unique_ptr<GenerationStream> StartGenerate(const xpd::v1::GenerateRequest& request,
                                                  const CallOptions& call = {});

  absl::StatusOr<xpd::v1::TokenizeResponse> Tokenize(const xpd::v1::TokenizeRequest& request,
                                                     const CallOptions& call = {});
  absl::StatusOr<xpd::v1::DetokenizeResponse> Detokenize(const xpd::v1::DetokenizeRequest& request,
                                                         const CallOptions& call = {});
  absl::StatusOr<xpd::v1::ListModelsResponse> ListModels(const CallOptions& call = {});

  const ClientOptions& options() const { return options_; }

 private:
  // A unary call with the deadline and UNAVAILABLE retries applied.
  template <typename Request, typename Response>
  absl::StatusOr<Response> Unary(grpc::Status (xpd::v1::Generation::Stub::*method)(
                                     grpc::ClientContext*, const Request&, Response*),
                                 const Request& request, const CallOptions& call);

  const ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<xpd::v1::Generation::Stub> stub_;
};

}  // namespace xpd::client
