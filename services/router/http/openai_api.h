// The OpenAI-compatible HTTP API's translation layer: OpenAI request JSON to
// xpd.v1.GenerateRequest (type-checked; unknown fields ignored), and
// xpd.v1.GenerateResponse messages back to OpenAI response objects
// (chat.completion, chat.completion.chunk, text_completion). No I/O here.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "xpd/v1/generation.pb.h"

namespace xpd::router::http {

enum class Endpoint { kChatCompletions, kCompletions };

// Default max_tokens of /v1/completions when a request names none (OpenAI's
// legacy default). Chat completions without max_tokens may use the rest of the
// context: see ParsedRequest::max_tokens_from_context.
inline constexpr int32_t kDefaultCompletionMaxTokens = 16;

// An OpenAI-style error: HTTP status plus the body's fields.
struct ApiError {
  int http_status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // empty = null
  std::string code;   // empty = null
};

// {"error": {"message", "type", "param", "code"}}
nlohmann::json ErrorBody(const ApiError& error);
// A gRPC / absl status from the Generation service as an HTTP error.
ApiError ErrorFromStatus(const absl::Status& status);
int HttpStatusFromCode(absl::StatusCode code);

// What the HTTP layer needs besides the GenerateRequest.
struct ParsedRequest {
  Endpoint endpoint = Endpoint::kChatCompletions;
  xpd::v1::GenerateRequest request;
  std::string model;  // as asked (echoed back); empty = the served model
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool logprobs = false;
  int32_t top_logprobs = 0;
  // A chat request without max_tokens / max_completion_tokens: the caller
  // sets sampling.max_tokens (left 0 here) with SetMaxTokensFromContext.
  bool max_tokens_from_context = false;
};

// Parses and type-checks a request body. On failure returns false and fills
// *error (HTTP 400 with `param` naming the offending field).
bool ParseRequest(Endpoint endpoint, const std::string& body, ParsedRequest* parsed,
                  ApiError* error);

// Sets the request's max_tokens to the rest of the context: context_length
// (ListModels' served context) minus the prompt's tokens (the router's
// Tokenize of the same chat). false with *error (400, param "messages") when
// the prompt leaves no room for a single token.
bool SetMaxTokensFromContext(int64_t context_length, int64_t prompt_tokens, ParsedRequest* parsed,
                             ApiError* error);

// Text of one token id for logprobs output ("token_id:N" when unknown).
using TokenText = std::function<std::string(int32_t)>;

// Accumulates a completion from GenerateResponse messages and renders it.
class CompletionBuilder {
 public:
  CompletionBuilder(const ParsedRequest& parsed, std::string served_model, int64_t created);

  // The object id ("chatcmpl-<id>" or "cmpl-<id>"), known after the first message.
  const std::string& id() const { return id_; }

  // Non-streaming: add every message, then render the whole object.
  void Add(const xpd::v1::GenerateResponse& response);
  nlohmann::json Final(const TokenText& token_text) const;

  // Streaming: the chunks (zero or more) one message turns into, in order.
  // The last message also yields the finish chunk and, when include_usage,
  // the usage chunk.
  std::vector<nlohmann::json> Chunks(const xpd::v1::GenerateResponse& response,
                                     const TokenText& token_text);

 private:
  nlohmann::json Logprobs(const std::vector<xpd::v1::TokenLogprob>& logprobs,
                          const TokenText& token_text, int64_t text_offset) const;
  nlohmann::json ChunkBase() const;
  void SetId(const xpd::v1::GenerateResponse& response);

  const ParsedRequest& parsed_;
  const std::string model_;
  const int64_t created_;
  std::string id_;
  std::string text_;
  std::vector<xpd::v1::TokenLogprob> logprobs_;
  xpd::v1::FinishReason finish_ = xpd::v1::FINISH_REASON_UNSPECIFIED;
  xpd::v1::Usage usage_;
  bool sent_role_ = false;
  int64_t streamed_chars_ = 0;
};

std::string FinishReasonName(xpd::v1::FinishReason reason);

}  // namespace xpd::router::http
