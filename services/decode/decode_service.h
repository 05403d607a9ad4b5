// xpd.v1.Decode on a decode rank: reservations, the token stream of each
// request (from the continuous-batching scheduler), and the rank's load.
// A cancelled or disconnected stream cancels its request, which frees its KV.
#pragma once

#include "common/runtime/decode_scheduler.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "xpd/v1/cluster.grpc.pb.h"

namespace xpd::decode {

class DecodeService final : public xpd::v1::Decode::Service {
 public:
  DecodeService(runtime::DecodeScheduler& scheduler, prometheus::Registry& registry,
                const prometheus::Labels& labels);

  grpc::Status Reserve(grpc::ServerContext* context, const xpd::v1::ReserveRequest* request,
                       xpd::v1::ReserveResponse* response) override;
  grpc::Status Release(grpc::ServerContext* context, const xpd::v1::ReleaseRequest* request,
                       xpd::v1::ReleaseResponse* response) override;
  grpc::Status Decode(grpc::ServerContext* context, const xpd::v1::DecodeRequest* request,
                      grpc::ServerWriter<xpd::v1::DecodeResponse>* writer) override;
  grpc::Status Status(grpc::ServerContext* context, const xpd::v1::DecodeStatusRequest* request,
                      xpd::v1::DecodeStatusResponse* response) override;

  // Current load, also used for controller heartbeats; refreshes the gauges.
  xpd::v1::RankLoad Load();

 private:
  runtime::DecodeScheduler& scheduler_;
  prometheus::Gauge& kv_blocks_used_;
  prometheus::Gauge& kv_blocks_total_;
  prometheus::Gauge& running_;
  prometheus::Gauge& waiting_;
  prometheus::Counter& generated_tokens_;
};

}  // namespace xpd::decode
