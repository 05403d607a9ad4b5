#include "services/router/http/openai_api.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace xpd::router::http {
namespace {

using nlohmann::json;

// Sets *error to a 400 about `param` and returns false.
bool Invalid(ApiError* error, const std::string& param, const std::string& message) {
  *error = ApiError{.http_status = 400, .message = message, .param = param};
  return false;
}

bool Present(const json& body, const char* key) {
  auto it = body.find(key);
  return it != body.end() && !it->is_null();
}

std::string TypeName(const json& value) { return value.type_name(); }

bool GetInt(const json& body, const char* key, int64_t* out, ApiError* error) {
  const json& value = body.at(key);
  if (!value.is_number_integer()) {
    return Invalid(error, key,
                   absl::StrCat("'", key, "' must be an integer, got ", TypeName(value)));
  }
  *out = value.get<int64_t>();
  return true;
}

bool GetNumber(const json& body, const char* key, double* out, ApiError* error) {
  const json& value = body.at(key);
  if (!value.is_number()) {
    return Invalid(error, key, absl::StrCat("'", key, "' must be a number, got ", TypeName(value)));
  }
  *out = value.get<double>();
  return true;
}

bool GetBool(const json& body, const char* key, bool* out, ApiError* error) {
  const json& value = body.at(key);
  if (!value.is_boolean()) {
    return Invalid(error, key,
                   absl::StrCat("'", key, "' must be a boolean, got ", TypeName(value)));
  }
  *out = value.get<bool>();
  return true;
}

bool TokenArray(const json& value, xpd::v1::TokenIds* ids) {
  for (const json& id : value) {
    if (!id.is_number_integer()) return false;
    const int64_t v = id.get<int64_t>();
    if (v < INT32_MIN || v > INT32_MAX) return false;
    ids->add_ids(static_cast<int32_t>(v));
  }
  return true;
}

// Chat message content: a string, null, or an array of {"type":"text","text":...} parts.
bool ContentText(const json& content, const std::string& param, std::string* text,
                 ApiError* error) {
  if (content.is_string()) {
    *text = content.get<std::string>();
    return true;
  }
  if (!content.is_array()) {
    return Invalid(error, param,
                   absl::StrCat("'", param, "' must be a string or an array of content parts, got ",
                                TypeName(content)));
  }
  for (size_t i = 0; i < content.size(); ++i) {
    const json& part = content[i];
    const std::string part_param = absl::StrCat(param, "[", i, "]");
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) {
      return Invalid(error, part_param, "content parts must be objects with a string 'type'");
    }
    if (part["type"] != "text") {
      return Invalid(error, part_param,
                     absl::StrCat("content part type '", part["type"].get<std::string>(),
                                  "' is not supported (only 'text')"));
    }
    if (!part.contains("text") || !part["text"].is_string()) {
      return Invalid(error, part_param + ".text", "a text content part needs a string 'text'");
    }
    text->append(part["text"].get<std::string>());
  }
  return true;
}

bool ParseMessages(const json& body, xpd::v1::Chat* chat, ApiError* error) {
  if (!Present(body, "messages")) return Invalid(error, "messages", "'messages' is required");
  const json& messages = body["messages"];
  if (!messages.is_array()) {
    return Invalid(error, "messages",
                   absl::StrCat("'messages' must be an array, got ", TypeName(messages)));
  }
  if (messages.empty()) return Invalid(error, "messages", "'messages' must not be empty");
  for (size_t i = 0; i < messages.size(); ++i) {
    const json& m = messages[i];
    const std::string param = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) {
      return Invalid(error, param, absl::StrCat("'", param, "' must be an object"));
    }
    if (!Present(m, "role") || !m["role"].is_string()) {
      return Invalid(error, param + ".role", absl::StrCat("'", param, ".role' must be a string"));
    }
    std::string role = m["role"].get<std::string>();
    if (role == "developer") role = "system";
    if (role != "system" && role != "user" && role != "assistant" && role != "tool") {
      return Invalid(
          error, param + ".role",
          absl::StrCat("unsupported role '", role, "' (system, developer, user, assistant, tool)"));
    }
    xpd::v1::ChatMessage* message = chat->add_messages();
    message->set_role(role);
    if (Present(m, "content")) {
      std::string text;
      if (!ContentText(m["content"], param + ".content", &text, error)) return false;
      message->set_content(text);
    } else if (role != "assistant") {
      return Invalid(error, param + ".content",
                     absl::StrCat("'", param, ".content' is required for role '", role, "'"));
    }
    if (Present(m, "tool_calls")) {
      const json& calls = m["tool_calls"];
      if (!calls.is_array()) {
        return Invalid(error, param + ".tool_calls", "'tool_calls' must be an array");
      }
      for (const json& call : calls) {
        if (!call.is_object() || !call.contains("function") || !call["function"].is_object()) {
          return Invalid(error, param + ".tool_calls", "each tool call needs a 'function' object");
        }
        const json& function = call["function"];
        xpd::v1::ToolCall* tool_call = message->add_tool_calls();
        tool_call->set_type("function");
        if (function.contains("name") && function["name"].is_string()) {
          tool_call->set_name(function["name"].get<std::string>());
        }
        if (function.contains("arguments") && function["arguments"].is_string()) {
          tool_call->set_arguments(function["arguments"].get<std::string>());
        }
      }
    }
  }
  chat->set_add_generation_prompt(true);
  return true;
}

bool ParsePrompt(const json& body, xpd::v1::GenerateRequest* request, ApiError* error) {
  if (!Present(body, "prompt")) return Invalid(error, "prompt", "'prompt' is required");
  const json& prompt = body["prompt"];
  if (prompt.is_string()) {
    request->set_text(prompt.get<std::string>());
    return true;
  }
  if (prompt.is_array()) {
    if (prompt.empty()) return Invalid(error, "prompt", "'prompt' must not be empty");
    if (prompt[0].is_number_integer()) {
      if (!TokenArray(prompt, request->mutable_tokens())) {
        return Invalid(error, "prompt", "a token prompt must be an array of 32-bit integers");
      }
      return true;
    }
    if (prompt.size() > 1 && (prompt[0].is_string() || prompt[0].is_array())) {
      return Invalid(error, "prompt", "batched prompts are not supported: send one prompt");
    }
    if (prompt[0].is_string()) {
      request->set_text(prompt[0].get<std::string>());
      return true;
    }
    if (prompt[0].is_array() && !prompt[0].empty()) {
      if (!TokenArray(prompt[0], request->mutable_tokens())) {
        return Invalid(error, "prompt", "a token prompt must be an array of 32-bit integers");
      }
      return true;
    }
  }
  return Invalid(error, "prompt",
                 absl::StrCat("'prompt' must be a string, an array of token ids, or a one-element "
                              "array of either; got ",
                              TypeName(prompt)));
}

json Usage(const xpd::v1::Usage& usage) {
  return {{"prompt_tokens", usage.prompt_tokens()},
          {"completion_tokens", usage.completion_tokens()},
          {"total_tokens", usage.prompt_tokens() + usage.completion_tokens()}};
}

json FinishJson(xpd::v1::FinishReason reason) {
  if (reason == xpd::v1::FINISH_REASON_UNSPECIFIED) return nullptr;
  return FinishReasonName(reason);
}

json Bytes(const std::string& text) {
  json bytes = json::array();
  for (unsigned char c : text) bytes.push_back(static_cast<int>(c));
  return bytes;
}

}  // namespace

std::string FinishReasonName(xpd::v1::FinishReason reason) {
  switch (reason) {
    case xpd::v1::FINISH_REASON_STOP:
      return "stop";
    case xpd::v1::FINISH_REASON_LENGTH:
      return "length";
    default:
      return "";
  }
}

json ErrorBody(const ApiError& error) {
  return {{"error",
           {{"message", error.message},
            {"type", error.type},
            {"param", error.param.empty() ? json(nullptr) : json(error.param)},
            {"code", error.code.empty() ? json(nullptr) : json(error.code)}}}};
}

int HttpStatusFromCode(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

ApiError ErrorFromStatus(const absl::Status& status) {
  ApiError error;
  error.http_status = HttpStatusFromCode(status.code());
  error.message = std::string(status.message());
  switch (error.http_status) {
    case 400:
      error.type = "invalid_request_error";
      break;
    case 401:
      error.type = "authentication_error";
      break;
    case 404:
      error.type = "invalid_request_error";
      error.code = "model_not_found";
      error.param = "model";
      break;
    case 429:
      error.type = "rate_limit_error";
      error.code = "rate_limit_exceeded";
      break;
    case 499:
      error.type = "invalid_request_error";
      error.code = "cancelled";
      break;
    case 503:
      error.type = "service_unavailable_error";
      break;
    case 504:
      error.type = "timeout_error";
      break;
    default:
      error.type = "server_error";
  }
  return error;
}

bool ParseRequest(Endpoint endpoint, const std::string& text, ParsedRequest* parsed,
                  ApiError* error) {
  parsed->endpoint = endpoint;
  json body = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) {
    return Invalid(error, "", "the request body is not valid JSON");
  }
  if (!body.is_object()) return Invalid(error, "", "the request body must be a JSON object");
  xpd::v1::GenerateRequest& request = parsed->request;
  xpd::v1::SamplingParams& sampling = *request.mutable_sampling();

  if (Present(body, "model")) {
    if (!body["model"].is_string()) {
      return Invalid(error, "model", "'model' must be a string");
    }
    parsed->model = body["model"].get<std::string>();
    request.set_model(parsed->model);
  }
  if (endpoint == Endpoint::kChatCompletions) {
    if (!ParseMessages(body, request.mutable_chat(), error)) return false;
  } else {
    if (!ParsePrompt(body, &request, error)) return false;
  }

  int64_t n = 1;
  if (Present(body, "n") && !GetInt(body, "n", &n, error)) return false;
  if (n != 1) {
    return Invalid(error, "n", absl::StrCat("only n=1 is supported, got n=", n));
  }
  if (Present(body, "best_of")) {
    int64_t best_of = 1;
    if (!GetInt(body, "best_of", &best_of, error)) return false;
    if (best_of != 1) {
      return Invalid(error, "best_of", "only best_of=1 is supported");
    }
  }

  int64_t max_tokens = 0;
  bool max_tokens_given = false;
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    if (!Present(body, key)) continue;
    if (!GetInt(body, key, &max_tokens, error)) return false;
    if (max_tokens < 1 || max_tokens > INT32_MAX) {
      return Invalid(error, key, absl::StrCat("'", key, "' must be >= 1, got ", max_tokens));
    }
    max_tokens_given = true;
  }
  if (!max_tokens_given && endpoint == Endpoint::kChatCompletions) {
    parsed->max_tokens_from_context = true;  // the caller knows the context and the prompt
  } else {
    sampling.set_max_tokens(
        static_cast<int32_t>(max_tokens_given ? max_tokens : kDefaultCompletionMaxTokens));
  }

  double number = 0;
  if (Present(body, "temperature")) {
    if (!GetNumber(body, "temperature", &number, error)) return false;
    if (number < 0 || number > 2) {
      return Invalid(error, "temperature", "'temperature' must be in [0, 2]");
    }
    sampling.set_temperature(static_cast<float>(number));
  }
  if (Present(body, "top_p")) {
    if (!GetNumber(body, "top_p", &number, error)) return false;
    if (number <= 0 || number > 1) return Invalid(error, "top_p", "'top_p' must be in (0, 1]");
    sampling.set_top_p(static_cast<float>(number));
  }
  if (Present(body, "seed")) {
    int64_t seed = 0;
    if (!GetInt(body, "seed", &seed, error)) return false;
    sampling.set_seed(static_cast<uint64_t>(seed));
  }
  if (Present(body, "stop")) {
    const json& stop = body["stop"];
    if (stop.is_string()) {
      if (!stop.get<std::string>().empty()) sampling.add_stop(stop.get<std::string>());
    } else if (stop.is_array()) {
      for (const json& s : stop) {
        if (!s.is_string()) return Invalid(error, "stop", "'stop' entries must be strings");
        if (!s.get<std::string>().empty()) sampling.add_stop(s.get<std::string>());
      }
    } else {
      return Invalid(
          error, "stop",
          absl::StrCat("'stop' must be a string or an array of strings, got ", TypeName(stop)));
    }
  }
  if (Present(body, "stream") && !GetBool(body, "stream", &parsed->stream, error)) return false;
  if (Present(body, "stream_options")) {
    const json& options = body["stream_options"];
    if (!options.is_object()) {
      return Invalid(error, "stream_options", "'stream_options' must be an object");
    }
    if (Present(options, "include_usage")) {
      if (!options["include_usage"].is_boolean()) {
        return Invalid(error, "stream_options.include_usage",
                       "'stream_options.include_usage' must be a boolean");
      }
      parsed->include_usage = options["include_usage"].get<bool>();
    }
  }

  if (endpoint == Endpoint::kChatCompletions) {
    if (Present(body, "logprobs") && !GetBool(body, "logprobs", &parsed->logprobs, error)) {
      return false;
    }
    if (Present(body, "top_logprobs")) {
      int64_t top = 0;
      if (!GetInt(body, "top_logprobs", &top, error)) return false;
      if (top < 0 || top > 20) {
        return Invalid(error, "top_logprobs", "'top_logprobs' must be in [0, 20]");
      }
      if (!parsed->logprobs && top > 0) {
        return Invalid(error, "top_logprobs", "'top_logprobs' needs 'logprobs': true");
      }
      parsed->top_logprobs = static_cast<int32_t>(top);
    }
  } else if (Present(body, "logprobs")) {
    // Legacy completions: logprobs is the number of alternatives (0..5).
    int64_t top = 0;
    if (!GetInt(body, "logprobs", &top, error)) return false;
    if (top < 0 || top > 20) return Invalid(error, "logprobs", "'logprobs' must be in [0, 20]");
    parsed->logprobs = true;
    parsed->top_logprobs = static_cast<int32_t>(top);
  }
  sampling.set_logprobs(parsed->logprobs);
  sampling.set_top_logprobs(parsed->top_logprobs);
  return true;
}

bool SetMaxTokensFromContext(int64_t context_length, int64_t prompt_tokens, ParsedRequest* parsed,
                             ApiError* error) {
  const int64_t remaining = context_length - prompt_tokens;
  if (remaining < 1) {
    return Invalid(error, "messages",
                   absl::StrCat("the messages (", prompt_tokens,
                                " tokens) leave no room for a completion in the context of ",
                                context_length, " tokens"));
  }
  parsed->request.mutable_sampling()->set_max_tokens(
      static_cast<int32_t>(std::min<int64_t>(remaining, INT32_MAX)));
  parsed->max_tokens_from_context = false;
  return true;
}

CompletionBuilder::CompletionBuilder(const ParsedRequest& parsed, std::string served_model,
                                     int64_t created)
    : parsed_(parsed),
      model_(parsed.model.empty() ? std::move(served_model) : parsed.model),
      created_(created) {}

void CompletionBuilder::SetId(const xpd::v1::GenerateResponse& response) {
  if (!id_.empty() || response.request_id().empty()) return;
  id_ = absl::StrCat(parsed_.endpoint == Endpoint::kChatCompletions ? "chatcmpl-" : "cmpl-",
                     response.request_id());
}

void CompletionBuilder::Add(const xpd::v1::GenerateResponse& response) {
  SetId(response);
  text_ += response.text();
  logprobs_.insert(logprobs_.end(), response.logprobs().begin(), response.logprobs().end());
  if (response.finish_reason() != xpd::v1::FINISH_REASON_UNSPECIFIED) {
    finish_ = response.finish_reason();
    usage_ = response.usage();
  }
}

json CompletionBuilder::Logprobs(const std::vector<xpd::v1::TokenLogprob>& logprobs,
                                 const TokenText& token_text, int64_t text_offset) const {
  if (parsed_.endpoint == Endpoint::kChatCompletions) {
    json content = json::array();
    for (const auto& lp : logprobs) {
      const std::string token = token_text(lp.token_id());
      json top = json::array();
      for (int i = 0; i < lp.top_size() && i < parsed_.top_logprobs; ++i) {
        const std::string alt = token_text(lp.top(i).token_id());
        top.push_back({{"token", alt}, {"logprob", lp.top(i).logprob()}, {"bytes", Bytes(alt)}});
      }
      content.push_back({{"token", token},
                         {"logprob", lp.logprob()},
                         {"bytes", Bytes(token)},
                         {"top_logprobs", top}});
    }
    return {{"content", content}, {"refusal", nullptr}};
  }
  json tokens = json::array(), token_logprobs = json::array(), top = json::array(),
       offsets = json::array();
  for (const auto& lp : logprobs) {
    const std::string token = token_text(lp.token_id());
    tokens.push_back(token);
    token_logprobs.push_back(lp.logprob());
    json alternatives = json::object();
    for (int i = 0; i < lp.top_size() && i < parsed_.top_logprobs; ++i) {
      alternatives[token_text(lp.top(i).token_id())] = lp.top(i).logprob();
    }
    top.push_back(alternatives);
    offsets.push_back(text_offset);
    text_offset += static_cast<int64_t>(token.size());
  }
  return {{"tokens", tokens},
          {"token_logprobs", token_logprobs},
          {"top_logprobs", top},
          {"text_offset", offsets}};
}

json CompletionBuilder::Final(const TokenText& token_text) const {
  const bool chat = parsed_.endpoint == Endpoint::kChatCompletions;
  json choice = {
      {"index", 0},
      {"logprobs", parsed_.logprobs ? Logprobs(logprobs_, token_text, 0) : json(nullptr)},
      {"finish_reason", FinishJson(finish_)}};
  if (chat) {
    choice["message"] = {{"role", "assistant"}, {"content", text_}, {"refusal", nullptr}};
  } else {
    choice["text"] = text_;
  }
  return {{"id", id_},
          {"object", chat ? "chat.completion" : "text_completion"},
          {"created", created_},
          {"model", model_},
          {"system_fingerprint", nullptr},
          {"choices", json::array({choice})},
          {"usage", Usage(usage_)}};
}

json CompletionBuilder::ChunkBase() const {
  const bool chat = parsed_.endpoint == Endpoint::kChatCompletions;
  json chunk = {{"id", id_},
                {"object", chat ? "chat.completion.chunk" : "text_completion"},
                {"created", created_},
                {"model", model_},
                {"system_fingerprint", nullptr}};
  if (parsed_.include_usage) chunk["usage"] = nullptr;
  return chunk;
}

std::vector<json> CompletionBuilder::Chunks(const xpd::v1::GenerateResponse& response,
                                            const TokenText& token_text) {
  SetId(response);
  const bool chat = parsed_.endpoint == Endpoint::kChatCompletions;
  std::vector<json> chunks;
  auto choice = [&](json delta_or_text, json logprobs, json finish) {
    json c = {
        {"index", 0}, {"logprobs", std::move(logprobs)}, {"finish_reason", std::move(finish)}};
    if (chat) {
      c["delta"] = std::move(delta_or_text);
    } else {
      c["text"] = std::move(delta_or_text);
    }
    json chunk = ChunkBase();
    chunk["choices"] = json::array({std::move(c)});
    return chunk;
  };
  if (chat && !sent_role_) {
    sent_role_ = true;
    chunks.push_back(choice({{"role", "assistant"}, {"content", ""}}, nullptr, nullptr));
  }
  const bool last = response.finish_reason() != xpd::v1::FINISH_REASON_UNSPECIFIED;
  if (!response.text().empty() || response.logprobs_size() > 0) {
    json logprobs = nullptr;
    if (parsed_.logprobs) {
      logprobs = Logprobs({response.logprobs().begin(), response.logprobs().end()}, token_text,
                          streamed_chars_);
    }
    streamed_chars_ += static_cast<int64_t>(response.text().size());
    json delta = chat ? json{{"content", response.text()}} : json(response.text());
    chunks.push_back(choice(std::move(delta), std::move(logprobs), nullptr));
  }
  if (last) {
    finish_ = response.finish_reason();
    usage_ = response.usage();
    chunks.push_back(choice(chat ? json::object() : json(""), nullptr, FinishJson(finish_)));
    if (parsed_.include_usage) {
      json chunk = ChunkBase();
      chunk["choices"] = json::array();
      chunk["usage"] = Usage(usage_);
      chunks.push_back(std::move(chunk));
    }
  }
  return chunks;
}

}  // namespace xpd::router::http
