// xpd.v1.Prefill on a prefill rank: runs the prompt through the batched,
// chunked prefill scheduler, then ships the request's latent KV to the decode
// rank the router named and returns the first token.
#pragma once

#include "common/runtime/prefill_scheduler.h"
#include "common/transport/kv_transport.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "xpd/v1/cluster.grpc.pb.h"

namespace xpd::prefill {

class PrefillService final : public xpd::v1::Prefill::Service {
 public:
  PrefillService(runtime::PrefillScheduler& scheduler, transport::KvTransport& transport,
                 prometheus::Registry& registry, const prometheus::Labels& labels);

  grpc::Status Prefill(grpc::ServerContext* context, const xpd::v1::PrefillRequest* request,
                       xpd::v1::PrefillResponse* response) override;

  xpd::v1::RankLoad Load();  // for controller heartbeats; refreshes the gauges

 private:
  runtime::PrefillScheduler& scheduler_;
  transport::KvTransport& transport_;
  prometheus::Counter& prompt_tokens_;
  prometheus::Counter& kv_bytes_;
  prometheus::Histogram& kv_seconds_;
  prometheus::Gauge& queued_;
  prometheus::Gauge& outstanding_tokens_;
};

}  // namespace xpd::prefill
