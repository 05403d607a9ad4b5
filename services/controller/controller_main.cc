// `xpd-controller`: the cluster's rank registry. Serves xpd.v1.Controller
// (plus health and reflection) and Prometheus metrics, prints
//   listening controller=HOST:PORT metrics=HOST:PORT
// once serving, and exits cleanly on SIGINT/SIGTERM.
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/base/command_flags.h"
#include "common/base/shutdown_signal.h"
#include "common/base/status_macros.h"
#include "common/metrics/metrics_server.h"
#include "common/rpc/grpc_server.h"
#include "services/controller/controller_service.h"

namespace {

constexpr char kUsage[] =
    "usage: xpd-controller [--host H] [--port P] [--metrics-port P]\n"
    "                      [--heartbeat-interval-ms N] [--down-after-ms N]\n"
    "  --port 0 / --metrics-port 0 pick free ports (the default).\n";

absl::Status Run(const std::vector<std::string>& args) {
  XPD_ASSIGN_OR_RETURN(
      auto flags,
      xpd::base::CommandFlags::Parse(
          args, {"host", "port", "metrics-port", "heartbeat-interval-ms", "down-after-ms"}, {}));
  const std::string host = flags.GetString("host", "127.0.0.1");
  XPD_ASSIGN_OR_RETURN(const int64_t port, flags.GetInt("port", 0));
  XPD_ASSIGN_OR_RETURN(const int64_t metrics_port, flags.GetInt("metrics-port", 0));
  XPD_ASSIGN_OR_RETURN(const int64_t interval_ms, flags.GetInt("heartbeat-interval-ms", 500));
  XPD_ASSIGN_OR_RETURN(const int64_t down_after_ms, flags.GetInt("down-after-ms", 0));
  if (interval_ms <= 0) return absl::InvalidArgumentError("--heartbeat-interval-ms must be > 0");
  if (down_after_ms < 0) return absl::InvalidArgumentError("--down-after-ms must be >= 0");

  XPD_ASSIGN_OR_RETURN(auto metrics,
                       xpd::metrics::MetricsServer::Start({.host = host,
                                                           .port = static_cast<int>(metrics_port),
                                                           .role = "controller",
                                                           .rank = "0",
                                                           .model = ""}));
  xpd::controller::ControllerService controller({
      .heartbeat_interval = absl::Milliseconds(interval_ms),
      .down_after = absl::Milliseconds(down_after_ms),
      .registry = &metrics->registry(),
      .metric_labels = metrics->labels(),
  });
  XPD_ASSIGN_OR_RETURN(
      auto server, xpd::rpc::GrpcServer::Start(
                       {.host = host, .port = static_cast<int>(port), .services = {&controller}}));
  std::cout << "listening controller=" << server->address() << " metrics=" << metrics->address()
            << std::endl;

  // Keeps xpd_ranks current while ranks go silent and nobody asks.
  absl::Mutex mu;
  bool stopping = false;
  std::thread refresher([&] {
    absl::MutexLock lock(&mu);
    while (!stopping) {
      mu.AwaitWithTimeout(absl::Condition(&stopping), absl::Milliseconds(interval_ms));
      controller.RefreshMetrics();
    }
  });

  const int signal = xpd::base::WaitForShutdownSignal();
  std::cerr << "xpd-controller: signal " << signal << ", shutting down" << std::endl;
  {
    absl::MutexLock lock(&mu);
    stopping = true;
  }
  refresher.join();
  server->Shutdown();
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  // Before any thread starts, so every thread inherits the blocked mask.
  xpd::base::BlockShutdownSignals();
  const std::vector<std::string> args(argv + 1, argv + argc);
  for (const std::string& arg : args) {
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      return 0;
    }
  }
  const absl::Status status = Run(args);
  if (!status.ok()) {
    std::cerr << "xpd-controller: " << status.message() << "\n" << kUsage;
    return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}
