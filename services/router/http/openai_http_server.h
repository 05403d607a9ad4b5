// The router's OpenAI-compatible HTTP endpoint (civetweb):
//   POST /v1/chat/completions, POST /v1/completions (JSON or Server-Sent
//   Events ending in "data: [DONE]"), GET /v1/models, GET /v1/models/{id},
//   GET /health, GET /metrics (the router's Prometheus registry).
// Every request is forwarded to the router's own xpd.v1.Generation service
// over gRPC (the C++ client SDK), so validation, tokenization, chat templates,
// stop strings and detokenization live in one place. With an API key, every
// endpoint except /health needs "Authorization: Bearer KEY".
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "prometheus/registry.h"

namespace xpd::router::http {

struct OpenAiHttpOptions {
  std::string host = "127.0.0.1";
  int port = 0;                              // 0 = a free port
  std::string generation_target;             // the router's gRPC address
  std::string served_model;                  // model id reported when a request names none
  std::string api_key;                       // empty = no authentication
  prometheus::Registry* registry = nullptr;  // for /metrics; null = 404
  int threads = 64;                          // concurrent HTTP requests (streams hold one each)
};

class OpenAiHttpServer {
 public:
  static absl::StatusOr<std::unique_ptr<OpenAiHttpServer>> Start(const OpenAiHttpOptions& options);
  ~OpenAiHttpServer();  // stops serving

  const std::string& address() const { return address_; }  // "host:port" actually bound

 private:
  OpenAiHttpServer() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string address_;
};

}  // namespace xpd::router::http
