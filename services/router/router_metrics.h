// The router's metric families, declared in one place.
#pragma once

#include "common/metrics/metrics_server.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "services/router/router_service.h"

namespace xpd::router {

struct RouterService::Metrics {
  Metrics(prometheus::Registry& registry, const prometheus::Labels& labels)
      : labels(labels),
        requests(prometheus::BuildCounter()
                     .Name("xpd_requests_total")
                     .Help("Generation requests by outcome (gRPC status code name)")
                     .Register(registry)),
        ttft(prometheus::BuildHistogram()
                 .Name("xpd_time_to_first_token_seconds")
                 .Help("Time from request arrival to the first generated token")
                 .Register(registry)
                 .Add(labels, metrics::LatencyBuckets())),
        itl(prometheus::BuildHistogram()
                .Name("xpd_inter_token_latency_seconds")
                .Help("Time between consecutive generated tokens of a request")
                .Register(registry)
                .Add(labels, metrics::LatencyBuckets())),
        e2e(prometheus::BuildHistogram()
                .Name("xpd_request_duration_seconds")
                .Help("End-to-end latency of generation requests")
                .Register(registry)
                .Add(labels, metrics::LatencyBuckets())),
        running(prometheus::BuildGauge()
                    .Name("xpd_requests_running")
                    .Help("Generation requests in flight on the router")
                    .Register(registry)
                    .Add(labels)),
        waiting(prometheus::BuildGauge()
                    .Name("xpd_requests_waiting")
                    .Help("Requests admitted but still waiting for their first token")
                    .Register(registry)
                    .Add(labels)),
        prompt_tokens(prometheus::BuildCounter()
                          .Name("xpd_prompt_tokens_total")
                          .Help("Prompt tokens of admitted requests")
                          .Register(registry)
                          .Add(labels)),
        generation_tokens(prometheus::BuildCounter()
                              .Name("xpd_generation_tokens_total")
                              .Help("Tokens generated and streamed to clients")
                              .Register(registry)
                              .Add(labels)) {}

  prometheus::Counter& Outcome(const std::string& code) {
    prometheus::Labels with = labels;
    with["outcome"] = code;
    return requests.Add(with);
  }

  prometheus::Labels labels;
  prometheus::Family<prometheus::Counter>& requests;
  prometheus::Histogram& ttft;
  prometheus::Histogram& itl;
  prometheus::Histogram& e2e;
  prometheus::Gauge& running;
  prometheus::Gauge& waiting;
  prometheus::Counter& prompt_tokens;
  prometheus::Counter& generation_tokens;
};

}  // namespace xpd::router
