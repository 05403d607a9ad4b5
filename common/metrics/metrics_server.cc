#include "common/metrics/metrics_server.h"

#include <exception>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "prometheus/exposer.h"

namespace xpd::metrics {

struct MetricsServer::Impl {
  std::unique_ptr<prometheus::Exposer> exposer;
};

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const MetricsServerOptions& options) {
  if (options.host.empty()) return absl::InvalidArgumentError("metrics server: empty host");
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics server: port out of range: ", options.port));
  }
  const bool ipv6 = options.host.find(':') != std::string::npos && options.host.front() != '[';
  const std::string host = ipv6 ? absl::StrCat("[", options.host, "]") : options.host;
  const std::string requested = absl::StrCat(host, ":", options.port);

  std::unique_ptr<MetricsServer> server(new MetricsServer());
  server->impl_ = std::make_unique<Impl>();
  try {
    server->impl_->exposer = std::make_unique<prometheus::Exposer>(requested, /*num_threads=*/2);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("metrics server: cannot bind ", requested, ": ", e.what()));
  }
  const std::vector<int> ports = server->impl_->exposer->GetListeningPorts();
  if (ports.empty() || ports.front() <= 0) {
    return absl::UnavailableError(
        absl::StrCat("metrics server: no listening port for ", requested));
  }
  server->registry_ = std::make_shared<prometheus::Registry>();
  server->impl_->exposer->RegisterCollectable(server->registry_);
  server->labels_ = {{"role", options.role}, {"rank", options.rank}, {"model", options.model}};
  server->address_ = absl::StrCat(host, ":", ports.front());
  return server;
}

MetricsServer::~MetricsServer() {
  // Stop serving before the registry goes away.
  if (impl_ != nullptr) impl_->exposer.reset();
}

const std::vector<double>& LatencyBuckets() {
  // Roughly exponential (x2..x2.5 per step) from 1 ms to 120 s: fine enough
  // for inter-token latency at the low end and long generations at the top.
  static const std::vector<double> kBuckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1,
                                               0.15,  0.25,   0.4,   0.6,  1.0,   1.5,  2.5,   4.0,
                                               6.0,   10.0,   20.0,  30.0, 60.0,  120.0};
  return kBuckets;
}

}  // namespace xpd::metrics
