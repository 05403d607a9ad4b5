// The process's Prometheus registry and its /metrics endpoint. Every metric
// carries the constant labels role, rank and model. Names follow Prometheus
// conventions: xpd_ prefix, base units, _total counters, _seconds histograms.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/registry.h"

namespace xpd::metrics {

struct MetricsServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;  // 0 = free port
  std::string role;
  std::string rank;
  std::string model;
};

class MetricsServer {
 public:
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const MetricsServerOptions& options);
  ~MetricsServer();

  prometheus::Registry& registry() { return *registry_; }
  const prometheus::Labels& labels() const { return labels_; }  // role, rank, model
  const std::string& address() const { return address_; }       // host:port of /metrics

 private:
  MetricsServer() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Labels labels_;
  std::string address_;
};

// Bucket boundaries (seconds) fitting LLM latencies: 1 ms .. 120 s.
const std::vector<double>& LatencyBuckets();

}  // namespace xpd::metrics
