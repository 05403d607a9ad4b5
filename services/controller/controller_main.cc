// `xpd-controller`: the cluster's rank registry and the EP groups' expert
// placement and rebalancer. Serves xpd.v1.Controller (plus health and
// reflection) and Prometheus metrics, prints
//   listening controller=HOST:PORT metrics=HOST:PORT
// once serving, and exits cleanly on SIGINT/SIGTERM.
#include <iostream>
#include <limits>
#include <memory>
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
#include "services/controller/configmap_placement_store.h"
#include "services/controller/controller_service.h"
#include "services/controller/placement_manager.h"

namespace {

constexpr char kUsage[] =
    "usage: xpd-controller [--host H] [--port P] [--metrics-port P] [--model-id NAME]\n"
    "                      [--heartbeat-interval-ms N] [--down-after-ms N]\n"
    "                      [--placement-file PATH | --placement-configmap [NAMESPACE/]NAME\n"
    "                       [--kube-api-url URL] [--kube-token-file PATH] [--kube-ca-file PATH]]\n"
    "                      [--redundant-experts R]\n"
    "                      [--load-window SECONDS] [--rollout-timeout-ms N]\n"
    "                      [--rebalance auto|off] [--rebalance-interval-ms N]\n"
    "                      [--rebalance-trigger X] [--rebalance-min-gain X]\n"
    "                      [--rebalance-min-interval-ms N] [--rebalance-max-bytes N]\n"
    "                      [--balancer-groups G] [--balancer-nodes N]\n"
    "  --port 0 / --metrics-port 0 pick free ports (the default).\n"
    "  --placement-file: EP group placements survive restarts there (JSON, replaced\n"
    "      atomically); without it or --placement-configmap they live in memory.\n"
    "      A corrupt file stops the start.\n"
    "  --placement-configmap: the same in a Kubernetes ConfigMap (NAME alone: the pod's\n"
    "      namespace). At start its key placement.json, else seed.json, else nothing;\n"
    "      each change is a merge patch of placement.json (needs get and patch on it).\n"
    "      An unreadable ConfigMap (401, 403, 404) or a malformed key stops the start.\n"
    "  --kube-api-url: the API server (default in a pod: https://$KUBERNETES_SERVICE_HOST:\n"
    "      $KUBERNETES_SERVICE_PORT); --kube-token-file (read for every request) and\n"
    "      --kube-ca-file default to the pod's ServiceAccount files in\n"
    "      /var/run/secrets/kubernetes.io/serviceaccount/ (\"\": no token; system CAs).\n"
    "  --redundant-experts: extra slots per MoE layer for replicas of hot experts in\n"
    "      initial placements (default 0); num_experts + R must divide by the ranks.\n"
    "  --load-window: seconds of expert load reports behind balance and plans (60).\n"
    "  --rollout-timeout-ms: bound on each rollout phase, Prepare then Commit (120000).\n"
    "  --rebalance auto: plan every --rebalance-interval-ms (10000) and roll out when\n"
    "      the balance is >= --rebalance-trigger (1.10), the plan gains >=\n"
    "      --rebalance-min-gain (0.05) and the last rollout is older than\n"
    "      --rebalance-min-interval-ms (600000); at most --rebalance-max-bytes of expert\n"
    "      weights per rollout (default unlimited). Default off: only `xpd rebalance`.\n"
    "  --balancer-groups / --balancer-nodes: EPLB's expert groups and nodes (1 and 1:\n"
    "      the global policy; set groups to the model's n_group and nodes to the\n"
    "      group's node count for the hierarchical one).\n";

// --placement-file or --placement-configmap (with its --kube-* flags);
// nullptr for neither.
absl::StatusOr<std::shared_ptr<xpd::controller::PlacementStore>> PlacementStoreFlags(
    const xpd::base::CommandFlags& flags) {
  const std::string file = flags.GetString("placement-file", "");
  const std::string configmap = flags.GetString("placement-configmap", "");
  if (!file.empty() && !configmap.empty()) {
    return absl::InvalidArgumentError(
        "--placement-file and --placement-configmap are mutually exclusive: the placement "
        "lives in one place");
  }
  xpd::controller::KubeApiOptions kube;
  kube.api_url = flags.GetString("kube-api-url", "");
  kube.token_file = flags.GetString("kube-token-file", kube.token_file);
  kube.ca_file = flags.GetString("kube-ca-file", kube.ca_file);
  if (configmap.empty()) {
    // Ignoring them would hide a forgotten --placement-configmap.
    for (const char* flag : {"kube-api-url", "kube-token-file", "kube-ca-file"}) {
      if (flags.Has(flag)) {
        return absl::InvalidArgumentError(absl::StrCat("--", flag, " needs --placement-configmap"));
      }
    }
    if (file.empty()) return nullptr;
    return std::make_shared<xpd::controller::FilePlacementStore>(file);
  }
  XPD_ASSIGN_OR_RETURN(xpd::controller::ConfigMapRef ref,
                       xpd::controller::ParseConfigMapRef(configmap));
  XPD_ASSIGN_OR_RETURN(
      std::unique_ptr<xpd::controller::ConfigMapPlacementStore> store,
      xpd::controller::ConfigMapPlacementStore::Create(std::move(ref), std::move(kube)));
  return std::shared_ptr<xpd::controller::PlacementStore>(std::move(store));
}

absl::StatusOr<xpd::controller::PlacementManagerOptions> PlacementFlags(
    const xpd::base::CommandFlags& flags) {
  xpd::controller::PlacementManagerOptions options;
  XPD_ASSIGN_OR_RETURN(options.store, PlacementStoreFlags(flags));
  XPD_ASSIGN_OR_RETURN(const int64_t redundant, flags.GetInt("redundant-experts", 0));
  XPD_ASSIGN_OR_RETURN(const double window_s, flags.GetDouble("load-window", 60));
  XPD_ASSIGN_OR_RETURN(const int64_t rollout_ms, flags.GetInt("rollout-timeout-ms", 120'000));
  const std::string mode = flags.GetString("rebalance", "off");
  XPD_ASSIGN_OR_RETURN(const int64_t interval_ms, flags.GetInt("rebalance-interval-ms", 10'000));
  XPD_ASSIGN_OR_RETURN(const double trigger, flags.GetDouble("rebalance-trigger", 1.10));
  XPD_ASSIGN_OR_RETURN(const double min_gain, flags.GetDouble("rebalance-min-gain", 0.05));
  XPD_ASSIGN_OR_RETURN(const int64_t min_interval_ms,
                       flags.GetInt("rebalance-min-interval-ms", 600'000));
  XPD_ASSIGN_OR_RETURN(const int64_t max_bytes,
                       flags.GetInt("rebalance-max-bytes", std::numeric_limits<int64_t>::max()));
  XPD_ASSIGN_OR_RETURN(const int64_t groups, flags.GetInt("balancer-groups", 1));
  XPD_ASSIGN_OR_RETURN(const int64_t nodes, flags.GetInt("balancer-nodes", 1));
  if (redundant < 0) return absl::InvalidArgumentError("--redundant-experts must be >= 0");
  if (!(window_s > 0)) return absl::InvalidArgumentError("--load-window must be > 0 seconds");
  if (rollout_ms <= 0) return absl::InvalidArgumentError("--rollout-timeout-ms must be > 0");
  if (mode != "auto" && mode != "off") {
    return absl::InvalidArgumentError("--rebalance must be auto or off");
  }
  if (interval_ms <= 0) return absl::InvalidArgumentError("--rebalance-interval-ms must be > 0");
  if (!(min_gain >= 0)) return absl::InvalidArgumentError("--rebalance-min-gain must be >= 0");
  if (!(trigger >= 0)) return absl::InvalidArgumentError("--rebalance-trigger must be >= 0");
  if (min_interval_ms < 0) {
    return absl::InvalidArgumentError("--rebalance-min-interval-ms must be >= 0");
  }
  if (max_bytes < 0) return absl::InvalidArgumentError("--rebalance-max-bytes must be >= 0");
  if (groups < 1 || nodes < 1) {
    return absl::InvalidArgumentError("--balancer-groups and --balancer-nodes must be >= 1");
  }
  options.redundant_experts = static_cast<int32_t>(redundant);
  options.load_window = absl::Seconds(window_s);
  options.rollout_timeout = absl::Milliseconds(rollout_ms);
  options.auto_rebalance = mode == "auto";
  options.rebalance_interval = absl::Milliseconds(interval_ms);
  options.policy.trigger_balance = trigger;
  options.policy.min_gain = min_gain;
  options.policy.min_interval = absl::Milliseconds(min_interval_ms);
  options.policy.max_bytes_per_rollout = max_bytes;
  options.balancer = {.num_groups = static_cast<int32_t>(groups),
                      .num_nodes = static_cast<int32_t>(nodes)};
  return options;
}

absl::Status Run(const std::vector<std::string>& args) {
  XPD_ASSIGN_OR_RETURN(auto flags, xpd::base::CommandFlags::Parse(args,
                                                                  {"host",
                                                                   "port",
                                                                   "metrics-port",
                                                                   "model-id",
                                                                   "heartbeat-interval-ms",
                                                                   "down-after-ms",
                                                                   "placement-file",
                                                                   "placement-configmap",
                                                                   "kube-api-url",
                                                                   "kube-token-file",
                                                                   "kube-ca-file",
                                                                   "redundant-experts",
                                                                   "load-window",
                                                                   "rollout-timeout-ms",
                                                                   "rebalance",
                                                                   "rebalance-interval-ms",
                                                                   "rebalance-trigger",
                                                                   "rebalance-min-gain",
                                                                   "rebalance-min-interval-ms",
                                                                   "rebalance-max-bytes",
                                                                   "balancer-groups",
                                                                   "balancer-nodes"},
                                                                  {}));
  const std::string host = flags.GetString("host", "127.0.0.1");
  XPD_ASSIGN_OR_RETURN(const int64_t port, flags.GetInt("port", 0));
  XPD_ASSIGN_OR_RETURN(const int64_t metrics_port, flags.GetInt("metrics-port", 0));
  XPD_ASSIGN_OR_RETURN(const int64_t interval_ms, flags.GetInt("heartbeat-interval-ms", 500));
  XPD_ASSIGN_OR_RETURN(const int64_t down_after_ms, flags.GetInt("down-after-ms", 0));
  if (interval_ms <= 0) return absl::InvalidArgumentError("--heartbeat-interval-ms must be > 0");
  if (down_after_ms < 0) return absl::InvalidArgumentError("--down-after-ms must be >= 0");
  XPD_ASSIGN_OR_RETURN(xpd::controller::PlacementManagerOptions placement_options,
                       PlacementFlags(flags));

  XPD_ASSIGN_OR_RETURN(auto metrics, xpd::metrics::MetricsServer::Start(
                                         {.host = host,
                                          .port = static_cast<int>(metrics_port),
                                          .role = "controller",
                                          .rank = "0",
                                          .model = flags.GetString("model-id", "default")}));
  placement_options.registry = &metrics->registry();
  placement_options.metric_labels = metrics->labels();
  XPD_ASSIGN_OR_RETURN(std::unique_ptr<xpd::controller::PlacementManager> placement,
                       xpd::controller::PlacementManager::Create(std::move(placement_options)));
  xpd::controller::ControllerService controller({
      .heartbeat_interval = absl::Milliseconds(interval_ms),
      .down_after = absl::Milliseconds(down_after_ms),
      .registry = &metrics->registry(),
      .metric_labels = metrics->labels(),
      .placement = placement.get(),
  });
  XPD_ASSIGN_OR_RETURN(
      auto server, xpd::rpc::GrpcServer::Start(
                       {.host = host, .port = static_cast<int>(port), .services = {&controller}}));
  placement->StartAutoRebalance();
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
  // First: ends rollouts and blocked joins, so the server stops promptly.
  placement->Shutdown();
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
