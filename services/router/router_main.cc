// xpd-router: the cluster's public entry point (xpd.v1.Generation).
//   xpd-router --model DIR --controller HOST:PORT [--tokenizer DIR] [--host H] [--port P]
//              [--metrics-port M] [--max-in-flight N] [--model-id NAME]
//              [--http-port H [--api-key KEY] [--http-threads T]]
// Prints "listening router=HOST:PORT metrics=HOST:PORT[ http=HOST:PORT]" once
// serving; stops on SIGINT/SIGTERM. --http-port (0 = a free port) enables the
// OpenAI-compatible HTTP endpoint; --api-key (or XPD_API_KEY) makes every
// HTTP endpoint except /health require "Authorization: Bearer KEY".
#include <cstdlib>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "common/base/command_flags.h"
#include "common/base/shutdown_signal.h"
#include "common/base/status_macros.h"
#include "common/metrics/metrics_server.h"
#include "common/model/model_config.h"
#include "common/rpc/grpc_server.h"
#include "services/router/http/openai_http_server.h"
#include "services/router/rank_directory.h"
#include "services/router/router_service.h"

namespace xpd::router {
namespace {

// Loads the tokenizer from `dir`; on failure returns null and says why in *error.
std::unique_ptr<tokenizer::Tokenizer> LoadTokenizer(
    const std::string& dir, std::unique_ptr<tokenizer::TokenizerConfig>* config,
    std::string* error) {
  auto tokenizer = tokenizer::Tokenizer::Load(dir + "/tokenizer.json");
  if (!tokenizer.ok()) {
    *error = std::string(tokenizer.status().message());
    return nullptr;
  }
  auto loaded = tokenizer::TokenizerConfig::Load(dir + "/tokenizer_config.json");
  if (loaded.ok()) {
    *config = std::make_unique<tokenizer::TokenizerConfig>(std::move(*loaded));
  } else {
    *error = std::string(loaded.status().message());
  }
  return std::move(*tokenizer);
}

absl::Status Run(const std::vector<std::string>& args) {
  XPD_ASSIGN_OR_RETURN(base::CommandFlags flags,
                       base::CommandFlags::Parse(
                           args,
                           {"model", "tokenizer", "controller", "host", "port", "metrics-port",
                            "max-in-flight", "model-id", "http-port", "api-key", "http-threads"},
                           {}));
  XPD_ASSIGN_OR_RETURN(std::string model_dir, flags.GetString("model"));
  XPD_ASSIGN_OR_RETURN(std::string controller, flags.GetString("controller"));
  XPD_ASSIGN_OR_RETURN(int64_t port, flags.GetInt("port", 0));
  XPD_ASSIGN_OR_RETURN(int64_t metrics_port, flags.GetInt("metrics-port", 0));
  XPD_ASSIGN_OR_RETURN(int64_t max_in_flight, flags.GetInt("max-in-flight", 256));
  const std::string host = flags.GetString("host", "127.0.0.1");
  XPD_ASSIGN_OR_RETURN(model::ModelConfig config,
                       model::LoadModelConfig(model_dir + "/config.json"));

  RouterOptions options{.model_id = flags.GetString("model-id", "default"),
                        .max_in_flight = static_cast<int32_t>(max_in_flight)};
  std::unique_ptr<tokenizer::TokenizerConfig> tokenizer_config;
  auto tokenizer = LoadTokenizer(flags.GetString("tokenizer", model_dir), &tokenizer_config,
                                 &options.tokenizer_error);
  if (tokenizer == nullptr) {
    std::cerr << "xpd-router: serving token ids only: " << options.tokenizer_error << "\n";
  }

  XPD_ASSIGN_OR_RETURN(auto metrics,
                       metrics::MetricsServer::Start({.host = host,
                                                      .port = static_cast<int>(metrics_port),
                                                      .role = "router",
                                                      .rank = "0",
                                                      .model = options.model_id}));
  RankDirectory ranks(controller, absl::Milliseconds(200));
  ranks.Start();
  RouterService service(options, config, ranks, std::move(tokenizer), std::move(tokenizer_config),
                        metrics->registry(), metrics->labels());
  XPD_ASSIGN_OR_RETURN(auto server,
                       rpc::GrpcServer::Start(
                           {.host = host, .port = static_cast<int>(port), .services = {&service}}));
  std::unique_ptr<http::OpenAiHttpServer> http_server;
  if (flags.Has("http-port")) {
    XPD_ASSIGN_OR_RETURN(int64_t http_port, flags.GetInt("http-port", 0));
    XPD_ASSIGN_OR_RETURN(int64_t http_threads, flags.GetInt("http-threads", 64));
    const char* env_key = std::getenv("XPD_API_KEY");
    XPD_ASSIGN_OR_RETURN(http_server,
                         http::OpenAiHttpServer::Start(
                             {.host = host,
                              .port = static_cast<int>(http_port),
                              .generation_target = server->address(),
                              .served_model = options.model_id,
                              .api_key = flags.GetString("api-key", env_key ? env_key : ""),
                              .registry = &metrics->registry(),
                              .threads = static_cast<int>(http_threads)}));
  }
  std::cout << "listening router=" << server->address() << " metrics=" << metrics->address()
            << (http_server ? absl::StrCat(" http=", http_server->address()) : std::string())
            << std::endl;
  base::WaitForShutdownSignal();
  http_server.reset();
  server->Shutdown();
  return absl::OkStatus();
}

}  // namespace
}  // namespace xpd::router

int main(int argc, char** argv) {
  xpd::base::BlockShutdownSignals();
  return xpd::base::ExitStatus("router", xpd::router::Run({argv + 1, argv + argc}));
}
