#include "services/router/http/openai_http_server.h"

#include <cstring>
#include <iostream>
#include <optional>

#include "CivetServer.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "civetweb.h"
#include "common/client/generation_client.h"
#include "nlohmann/json.hpp"
#include "prometheus/text_serializer.h"
#include "services/router/http/openai_api.h"
#include "services/router/http/peer_close_watcher.h"

namespace xpd::router::http {
namespace {

using nlohmann::json;

constexpr size_t kMaxBodyBytes = 32 << 20;

std::string Dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

void Send(mg_connection* conn, int status, const std::string& content_type,
          const std::string& body) {
  mg_response_header_start(conn, status);
  mg_response_header_add(conn, "Content-Type", content_type.c_str(), -1);
  mg_response_header_add(conn, "Content-Length", std::to_string(body.size()).c_str(), -1);
  mg_response_header_send(conn);
  mg_write(conn, body.data(), body.size());
}

void SendJson(mg_connection* conn, int status, const json& body) {
  Send(conn, status, "application/json", Dump(body));
}

void SendError(mg_connection* conn, const ApiError& error) {
  SendJson(conn, error.http_status, ErrorBody(error));
}

bool ConstantTimeEquals(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

struct OpenAiHttpServer::Impl : public CivetHandler {
  OpenAiHttpOptions options;
  std::unique_ptr<client::GenerationClient> client;
  std::unique_ptr<CivetServer> server;
  int64_t started = absl::ToUnixSeconds(absl::Now());

  bool handleGet(CivetServer*, mg_connection* conn) override { return Handle(conn, "GET"); }
  bool handlePost(CivetServer*, mg_connection* conn) override { return Handle(conn, "POST"); }

  bool Handle(mg_connection* conn, const std::string& method) {
    const mg_request_info* info = mg_get_request_info(conn);
    const std::string path = info->local_uri ? info->local_uri : "/";
    try {
      if (path == "/health") {
        if (method != "GET") return MethodNotAllowed(conn);
        SendJson(conn, 200, {{"status", "ok"}});
        return true;
      }
      if (!options.api_key.empty() && !Authorized(conn)) {
        SendError(conn, ApiError{.http_status = 401,
                                 .message = "missing or invalid API key: send "
                                            "'Authorization: Bearer <key>'",
                                 .type = "authentication_error",
                                 .code = "invalid_api_key"});
        return true;
      }
      if (path == "/metrics") {
        if (method != "GET") return MethodNotAllowed(conn);
        if (options.registry == nullptr) return NotFound(conn, path);
        Send(conn, 200, "text/plain; version=0.0.4; charset=utf-8",
             prometheus::TextSerializer().Serialize(options.registry->Collect()));
        return true;
      }
      if (path == "/v1/models" || absl::StartsWith(path, "/v1/models/")) {
        if (method != "GET") return MethodNotAllowed(conn);
        return Models(conn, path == "/v1/models" ? "" : path.substr(std::strlen("/v1/models/")));
      }
      if (path == "/v1/chat/completions" || path == "/v1/completions") {
        if (method != "POST") return MethodNotAllowed(conn);
        return Complete(conn, path == "/v1/chat/completions" ? Endpoint::kChatCompletions
                                                             : Endpoint::kCompletions);
      }
      return NotFound(conn, path);
    } catch (const std::exception& e) {
      std::cerr << "xpd-router: http " << method << " " << path << ": " << e.what() << "\n";
      SendError(conn, ApiError{.http_status = 500, .message = e.what(), .type = "server_error"});
      return true;
    }
  }

  bool Authorized(mg_connection* conn) const {
    const char* header = mg_get_header(conn, "Authorization");
    if (header == nullptr) return false;
    std::string value = header;
    if (!absl::StartsWithIgnoreCase(value, "Bearer ")) return false;
    std::string key = value.substr(7);
    while (!key.empty() && key.front() == ' ') key.erase(key.begin());
    return ConstantTimeEquals(key, options.api_key);
  }

  bool NotFound(mg_connection* conn, const std::string& path) {
    SendError(conn, ApiError{.http_status = 404,
                             .message = absl::StrCat("no such endpoint: ", path),
                             .code = "not_found"});
    return true;
  }

  bool MethodNotAllowed(mg_connection* conn) {
    SendError(conn, ApiError{.http_status = 405,
                             .message = "method not allowed for this endpoint",
                             .code = "method_not_allowed"});
    return true;
  }

  bool Models(mg_connection* conn, const std::string& id) {
    auto models = client->ListModels();
    if (!models.ok()) {
      SendError(conn, ErrorFromStatus(models.status()));
      return true;
    }
    json data = json::array();
    for (const auto& model : models->models()) {
      json entry = {{"id", model.id()},
                    {"object", "model"},
                    {"created", started},
                    {"owned_by", "xpd"},
                    {"context_length", model.context_length()}};
      if (!id.empty() && model.id() == id) {
        SendJson(conn, 200, entry);
        return true;
      }
      data.push_back(std::move(entry));
    }
    if (!id.empty()) {
      SendError(conn, ApiError{.http_status = 404,
                               .message = absl::StrCat("model '", id, "' is not served here"),
                               .param = "model",
                               .code = "model_not_found"});
      return true;
    }
    SendJson(conn, 200, {{"object", "list"}, {"data", data}});
    return true;
  }

  // Reads the body; false (after answering) when it is too large or cut short.
  bool ReadBody(mg_connection* conn, std::string* body) {
    const mg_request_info* info = mg_get_request_info(conn);
    if (info->content_length > static_cast<long long>(kMaxBodyBytes)) {
      SendError(conn, ApiError{.http_status = 413, .message = "request body too large"});
      return false;
    }
    char buffer[16384];
    while (true) {
      const int n = mg_read(conn, buffer, sizeof(buffer));
      if (n < 0) return false;
      if (n == 0) break;
      body->append(buffer, static_cast<size_t>(n));
      if (body->size() > kMaxBodyBytes) {
        SendError(conn, ApiError{.http_status = 413, .message = "request body too large"});
        return false;
      }
    }
    return true;
  }

  std::string ServedModel() { return options.served_model; }

  // A chat request without max_tokens: the rest of the context after its
  // prompt, as the Generation service counts both (ListModels' served
  // context, Tokenize of the same chat). False after answering an error.
  bool MaxTokensFromContext(mg_connection* conn, ParsedRequest* parsed) {
    auto models = client->ListModels();
    if (!models.ok()) {
      SendError(conn, ErrorFromStatus(models.status()));
      return false;
    }
    const xpd::v1::ModelInfo* model = nullptr;
    for (const xpd::v1::ModelInfo& m : models->models()) {
      if (parsed->model.empty() || m.id() == parsed->model) {
        model = &m;
        break;
      }
    }
    if (model == nullptr) {
      // Not served here: Generate answers that (404) as for any request.
      parsed->request.mutable_sampling()->set_max_tokens(1);
      return true;
    }
    xpd::v1::TokenizeRequest tokenize;
    tokenize.set_model(parsed->model);
    *tokenize.mutable_chat() = parsed->request.chat();
    auto ids = client->Tokenize(tokenize);
    if (!ids.ok()) {
      SendError(conn, ErrorFromStatus(ids.status()));
      return false;
    }
    ApiError error;
    if (!SetMaxTokensFromContext(model->context_length(), ids->ids_size(), parsed, &error)) {
      SendError(conn, error);
      return false;
    }
    return true;
  }

  bool Complete(mg_connection* conn, Endpoint endpoint) {
    std::string body;
    if (!ReadBody(conn, &body)) return true;
    ParsedRequest parsed;
    ApiError error;
    if (!ParseRequest(endpoint, body, &parsed, &error)) {
      SendError(conn, error);
      return true;
    }
    // Token text for logprobs, through the router's Detokenize (cached per request).
    absl::flat_hash_map<int32_t, std::string> texts;
    TokenText token_text = [&](int32_t id) -> std::string {
      auto it = texts.find(id);
      if (it != texts.end()) return it->second;
      xpd::v1::DetokenizeRequest request;
      request.set_model(parsed.model);
      request.add_ids(id);
      auto response = client->Detokenize(request);
      std::string text = response.ok() ? response->text() : absl::StrCat("token_id:", id);
      texts.emplace(id, text);
      return text;
    };

    if (parsed.max_tokens_from_context && !MaxTokensFromContext(conn, &parsed)) return true;

    CompletionBuilder builder(parsed, ServedModel(), absl::ToUnixSeconds(absl::Now()));
    std::unique_ptr<client::GenerationStream> stream = client->StartGenerate(parsed.request);
    // A client that disconnects cancels its generation (which frees its KV on
    // the decode rank) at once, also while nothing is written to it: before
    // the first token and all along a non-streaming request. Declared after
    // `stream`, so it stops watching before the stream goes away.
    std::optional<PeerCloseWatcher> watcher;
    const mg_request_info* info = mg_get_request_info(conn);
    if (const int fd = FindAcceptedSocket(info->remote_addr, info->remote_port, info->server_port);
        fd >= 0) {
      watcher.emplace(fd, [generation = stream.get()] { generation->Cancel(); });
    }
    const auto client_gone = [&] { return watcher.has_value() && watcher->closed(); };
    xpd::v1::GenerateResponse response;
    // The first message decides the HTTP status: errors (validation,
    // overload, unknown model) come before any token.
    if (!stream->Next(&response)) {
      absl::Status status = stream->Finish();
      if (status.ok()) status = absl::InternalError("the generation ended without a response");
      if (!client_gone()) SendError(conn, ErrorFromStatus(status));
      return true;
    }
    if (!parsed.stream) {
      do {
        builder.Add(response);
      } while (stream->Next(&response));
      absl::Status status = stream->Finish();
      if (client_gone()) return true;  // cancelled: nobody to answer
      if (!status.ok()) {
        SendError(conn, ErrorFromStatus(status));
        return true;
      }
      SendJson(conn, 200, builder.Final(token_text));
      return true;
    }

    mg_send_http_ok(conn, "text/event-stream", -1);
    auto event = [&](const std::string& data) {
      const std::string frame = absl::StrCat("data: ", data, "\n\n");
      return mg_send_chunk(conn, frame.data(), static_cast<unsigned int>(frame.size())) > 0;
    };
    bool connected = true;
    do {
      for (const json& chunk : builder.Chunks(response, token_text)) {
        if (!event(Dump(chunk))) {
          connected = false;
          break;
        }
      }
    } while (connected && stream->Next(&response));
    if (!connected || client_gone()) {
      // The client went away: cancel the generation (frees the ranks' slots).
      stream->Cancel();
      while (stream->Next(&response)) {
      }
      (void)stream->Finish();
      return true;
    }
    absl::Status status = stream->Finish();
    if (!status.ok()) event(Dump(ErrorBody(ErrorFromStatus(status))));
    if (event("[DONE]")) mg_send_chunk(conn, "", 0);
    return true;
  }
};

absl::StatusOr<std::unique_ptr<OpenAiHttpServer>> OpenAiHttpServer::Start(
    const OpenAiHttpOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  client::ClientOptions client_options;
  client_options.default_timeout = absl::InfiniteDuration();
  auto client = client::GenerationClient::Create(options.generation_target, client_options);
  if (!client.ok()) return client.status();
  impl->client = std::move(*client);
  const std::string listen = absl::StrCat(options.host, ":", options.port);
  const std::vector<std::string> civet_options = {
      "listening_ports",       listen,
      "num_threads",           std::to_string(std::max(1, options.threads)),
      "enable_keep_alive",     "yes",
      "keep_alive_timeout_ms", "30000"};
  try {
    impl->server = std::make_unique<CivetServer>(civet_options);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("http: cannot listen on ", listen, ": ", e.what()));
  }
  impl->server->addHandler("/", impl.get());
  std::vector<int> ports = impl->server->getListeningPorts();
  if (ports.empty()) return absl::UnavailableError(absl::StrCat("http: not listening on ", listen));
  std::unique_ptr<OpenAiHttpServer> server(new OpenAiHttpServer());
  server->address_ = absl::StrCat(options.host, ":", ports[0]);
  server->impl_ = std::move(impl);
  return server;
}

OpenAiHttpServer::~OpenAiHttpServer() {
  if (impl_ && impl_->server) impl_->server->close();
}

}  // namespace xpd::router::http
