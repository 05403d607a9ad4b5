// xpd-router: the cluster's public entry point (xpd.v1.Generation).
//   xpd-router --model DIR --controller HOST:PORT [--tokenizer DIR] [--host H] [--port P]
//              [--metrics-port M] [--max-in-flight N] [--model-id NAME]
// Prints "listening router=HOST:PORT metrics=HOST:PORT" once serving; stops on SIGINT/SIGTERM.
#include <iostream>

#include "absl/strings/str_cat.h"
#include "common/base/command_flags.h"
#include "common/base/shutdown_signal.h"
#include "common/base/status_macros.h"
#include "common/metrics/metrics_server.h"
#include "common/model/model_config.h"
#include "common/rpc/grpc_server.h"
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
  XPD_ASSIGN_OR_RETURN(
      base::CommandFlags flags,
      base::CommandFlags::Parse(args,
                                {"model", "tokenizer", "controller", "host", "port", "metrics-port",
                                 "max-in-flight", "model-id"},
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
  std::cout << "listening router=" << server->address() << " metrics=" << metrics->address()
            << std::endl;
  base::WaitForShutdownSignal();
  server->Shutdown();
  return absl::OkStatus();
}

}  // namespace
}  // namespace xpd::router

int main(int argc, char** argv) {
  xpd::base::BlockShutdownSignals();
  return xpd::base::ExitStatus("router", xpd::router::Run({argv + 1, argv + argc}));
}
