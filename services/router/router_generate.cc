// RouterService::Generate: one request from admission to its last token.
#include <iostream>
#include <optional>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/rpc/status_conversion.h"
#include "common/tokenizer/streaming_detokenizer.h"
#include "services/router/router_metrics.h"
#include "services/router/router_service.h"
#include "services/router/stop_string_filter.h"

namespace xpd::router {
namespace {

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "ok";
    case grpc::StatusCode::CANCELLED:
      return "cancelled";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "invalid_argument";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "deadline_exceeded";
    case grpc::StatusCode::NOT_FOUND:
      return "not_found";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "resource_exhausted";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "failed_precondition";
    case grpc::StatusCode::UNAVAILABLE:
      return "unavailable";
    default:
      return "error";
  }
}

}  // namespace

// Streams tokens to the client: text through the detokenizer and the stop
// strings, timing for the latency metrics.
class RouterService::GenerateCall {
 public:
  GenerateCall(RouterService& router, grpc::ServerContext& context,
               const xpd::v1::GenerateRequest& request, std::string id,
               grpc::ServerWriter<xpd::v1::GenerateResponse>& writer)
      : router_(router),
        context_(context),
        request_(request),
        id_(std::move(id)),
        writer_(writer),
        stops_({request.sampling().stop().begin(), request.sampling().stop().end()}) {
    if (router.tokenizer_ != nullptr) {
      detokenizer_.emplace(*router.tokenizer_, /*skip_special_tokens=*/true);
    }
  }

  grpc::Status Run();
  int64_t prompt_tokens() const { return prompt_tokens_; }
  int64_t completion_tokens() const { return completion_tokens_; }
  const char* finish() const {
    return finish_ == xpd::v1::FINISH_REASON_STOP     ? "stop"
           : finish_ == xpd::v1::FINISH_REASON_LENGTH ? "length"
                                                      : "none";
  }

 private:
  // Sends tokens; false when the client is gone.
  bool Emit(const google::protobuf::RepeatedPtrField<xpd::v1::TokenLogprob>& tokens);
  grpc::Status Prefill(const RankChoice& prefill, const RankChoice& decode,
                       const std::vector<int32_t>& prompt, xpd::v1::TokenLogprob* first);
  grpc::Status Decode(const RankChoice& decode, const xpd::v1::TokenLogprob& first);
  void Release(const RankChoice& decode);

  RouterService& router_;
  grpc::ServerContext& context_;
  const xpd::v1::GenerateRequest& request_;
  std::string id_;
  grpc::ServerWriter<xpd::v1::GenerateResponse>& writer_;
  std::optional<tokenizer::StreamingDetokenizer> detokenizer_;
  StopStringFilter stops_;
  absl::Time start_ = absl::Now();
  absl::Time last_token_;
  // The request's prompt and generated tokens: what a re-prefill on another
  // decode rank needs if this one fails (request migration).
  std::vector<int32_t> prompt_;
  std::vector<int32_t> generated_;
  int64_t prompt_tokens_ = 0;
  int64_t completion_tokens_ = 0;
  xpd::v1::FinishReason finish_ = xpd::v1::FINISH_REASON_UNSPECIFIED;
};

bool RouterService::GenerateCall::Emit(
    const google::protobuf::RepeatedPtrField<xpd::v1::TokenLogprob>& tokens) {
  if (tokens.empty() || stops_.stopped()) return true;
  xpd::v1::GenerateResponse response;
  response.set_request_id(id_);
  std::string text;
  for (const xpd::v1::TokenLogprob& token : tokens) {
    response.add_token_ids(token.token_id());
    generated_.push_back(token.token_id());
    if (request_.sampling().logprobs()) *response.add_logprobs() = token;
    if (detokenizer_) text += detokenizer_->Add(token.token_id());
    const absl::Time now = absl::Now();
    if (completion_tokens_ == 0) {
      router_.metrics_->ttft.Observe(absl::ToDoubleSeconds(now - start_));
      router_.metrics_->waiting.Decrement();
    } else {
      router_.metrics_->itl.Observe(absl::ToDoubleSeconds(now - last_token_));
    }
    last_token_ = now;
    ++completion_tokens_;
  }
  router_.metrics_->generation_tokens.Increment(tokens.size());
  response.set_text(stops_.Add(text));
  if (stops_.stopped()) finish_ = xpd::v1::FINISH_REASON_STOP;
  return writer_.Write(response);
}

void RouterService::GenerateCall::Release(const RankChoice& decode) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  xpd::v1::ReleaseRequest request;
  request.set_request_id(id_);
  xpd::v1::ReleaseResponse response;
  (void)router_.DecodeStub(decode.address).Release(&context, request, &response);
}

grpc::Status RouterService::GenerateCall::Prefill(const RankChoice& prefill,
                                                  const RankChoice& decode,
                                                  const std::vector<int32_t>& prompt,
                                                  xpd::v1::TokenLogprob* first) {
  auto context = grpc::ClientContext::FromServerContext(context_);
  xpd::v1::PrefillRequest request;
  request.set_request_id(id_);
  request.mutable_prompt()->Assign(prompt.begin(), prompt.end());
  *request.mutable_sampling() = request_.sampling();
  request.set_decode_address(decode.address);
  xpd::v1::PrefillResponse response;
  grpc::Status status =
      router_.PrefillStub(prefill.address).Prefill(context.get(), request, &response);
  router_.ranks_.PrefillDone(prefill.rank_id, prompt_tokens_);
  if (!status.ok()) {
    return grpc::Status(status.error_code(),
                        absl::StrCat("prefill rank ", prefill.rank_id, " (", prefill.address,
                                     "): ", status.error_message()));
  }
  *first = response.first_token();
  return grpc::Status::OK;
}

grpc::Status RouterService::GenerateCall::Decode(const RankChoice& decode,
                                                 const xpd::v1::TokenLogprob& first) {
  auto context = grpc::ClientContext::FromServerContext(context_);
  xpd::v1::DecodeRequest request;
  request.set_request_id(id_);
  request.set_prompt_tokens(static_cast<int32_t>(prompt_tokens_));
  *request.mutable_first_token() = first;
  *request.mutable_sampling() = request_.sampling();
  auto reader = router_.DecodeStub(decode.address).Decode(context.get(), request);
  xpd::v1::DecodeResponse response;
  bool client_gone = false;
  while (reader->Read(&response)) {
    if (!Emit(response.logprobs())) {
      client_gone = true;
      context->TryCancel();
      break;
    }
    if (stops_.stopped()) {
      context->TryCancel();  // frees the request's KV on the decode rank now
      break;
    }
    if (response.finish_reason() != xpd::v1::FINISH_REASON_UNSPECIFIED) {
      finish_ = response.finish_reason();
    }
  }
  grpc::Status status = reader->Finish();
  if (client_gone) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
  if (stops_.stopped()) return grpc::Status::OK;
  if (!status.ok()) {
    return grpc::Status(status.error_code(),
                        absl::StrCat("decode rank ", decode.rank_id, " (", decode.address,
                                     "): ", status.error_message()));
  }
  return grpc::Status::OK;
}

grpc::Status RouterService::GenerateCall::Run() {
  if (!request_.model().empty() && request_.model() != router_.options_.model_id) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("model '", request_.model(), "' is not served here (serving '",
                                     router_.options_.model_id, "')"));
  }
  absl::StatusOr<std::vector<int32_t>> prompt = router_.PromptIds(request_);
  if (!prompt.ok()) return rpc::ToGrpcStatus(prompt.status());
  prompt_ = *prompt;
  prompt_tokens_ = static_cast<int64_t>(prompt_.size());
  if (absl::Status s = router_.ValidateSampling(request_.sampling(), prompt_tokens_); !s.ok()) {
    return rpc::ToGrpcStatus(s);
  }
  router_.metrics_->prompt_tokens.Increment(static_cast<double>(prompt_tokens_));
  const int64_t blocks =
      (prompt_tokens_ + request_.sampling().max_tokens() + router_.options_.kv_block_size - 1) /
      router_.options_.kv_block_size;
  absl::StatusOr<RankChoice> decode = router_.ranks_.PickDecode(blocks);
  if (!decode.ok()) return rpc::ToGrpcStatus(decode.status());
  absl::StatusOr<RankChoice> prefill = router_.ranks_.PickPrefill(prompt_tokens_);
  if (!prefill.ok()) return rpc::ToGrpcStatus(prefill.status());

  {  // Reserve KV on the decode rank before any prefill work is spent.
    auto context = grpc::ClientContext::FromServerContext(context_);
    xpd::v1::ReserveRequest request;
    request.set_request_id(id_);
    request.set_prompt_tokens(static_cast<int32_t>(prompt_tokens_));
    request.set_max_tokens(request_.sampling().max_tokens());
    xpd::v1::ReserveResponse response;
    grpc::Status status =
        router_.DecodeStub(decode->address).Reserve(context.get(), request, &response);
    if (!status.ok()) {
      router_.ranks_.PrefillDone(prefill->rank_id, prompt_tokens_);
      return grpc::Status(status.error_code(), absl::StrCat("decode rank ", decode->rank_id, ": ",
                                                            status.error_message()));
    }
  }
  xpd::v1::TokenLogprob first;
  if (grpc::Status status = Prefill(*prefill, *decode, *prompt, &first); !status.ok()) {
    Release(*decode);
    return status;
  }
  google::protobuf::RepeatedPtrField<xpd::v1::TokenLogprob> first_only;
  *first_only.Add() = first;
  if (!Emit(first_only)) {
    Release(*decode);
    return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
  }
  if (stops_.stopped()) {
    Release(*decode);
  } else if (grpc::Status status = Decode(*decode, first); !status.ok()) {
    // A decode call cancelled before the rank started it leaves only a
    // reservation behind: release it (a no-op for a started request).
    Release(*decode);
    return status;
  }

  xpd::v1::GenerateResponse last;
  last.set_request_id(id_);
  std::string tail = detokenizer_ ? detokenizer_->Flush() : "";
  last.set_text(stops_.stopped() ? "" : stops_.Add(tail) + stops_.Flush());
  if (stops_.stopped()) finish_ = xpd::v1::FINISH_REASON_STOP;
  if (finish_ == xpd::v1::FINISH_REASON_UNSPECIFIED) finish_ = xpd::v1::FINISH_REASON_LENGTH;
  last.set_finish_reason(finish_);
  last.mutable_usage()->set_prompt_tokens(static_cast<int32_t>(prompt_tokens_));
  last.mutable_usage()->set_completion_tokens(static_cast<int32_t>(completion_tokens_));
  if (!writer_.Write(last)) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
  return grpc::Status::OK;
}

grpc::Status RouterService::Generate(grpc::ServerContext* context,
                                     const xpd::v1::GenerateRequest* request,
                                     grpc::ServerWriter<xpd::v1::GenerateResponse>* writer) {
  const absl::Time start = absl::Now();
  const std::string id = request->request_id().empty() ? NewRequestId() : request->request_id();
  if (in_flight_.fetch_add(1) >= options_.max_in_flight) {
    in_flight_.fetch_sub(1);
    metrics_->Outcome("resource_exhausted").Increment();
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat("router at capacity: ", options_.max_in_flight,
                                     " requests in flight; retry later"));
  }
  metrics_->running.Increment();
  metrics_->waiting.Increment();
  GenerateCall call(*this, *context, *request, id, *writer);
  grpc::Status status = call.Run();
  if (call.completion_tokens() == 0) metrics_->waiting.Decrement();
  metrics_->running.Decrement();
  in_flight_.fetch_sub(1);
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (status.ok()) metrics_->e2e.Observe(seconds);
  metrics_->Outcome(CodeName(status.error_code())).Increment();
  std::cerr << absl::StrFormat(
      "request id=%s prompt_tokens=%d completion_tokens=%d finish=%s seconds=%.3f status=%s%s\n",
      id, call.prompt_tokens(), call.completion_tokens(), call.finish(), seconds,
      CodeName(status.error_code()),
      status.ok() ? "" : absl::StrCat(" message=\"", status.error_message(), "\""));
  return status;
}

}  // namespace xpd::router
