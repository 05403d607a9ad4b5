// A decode rank's membership in an expert-parallel (EP) group: it asks the
// controller for the group's placement before the model loads (so only this
// rank's experts are read), serves the group's all-to-all (ExpertExchange)
// and the controller's rollouts (PlacementAgent), joins the group once its
// server runs, and reports the experts its tokens were routed to.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/model/checkpoint.h"
#include "common/model/deepseek_model.h"
#include "common/placement/expert_placement.h"
#include "common/transport/ep_group_exchange.h"
#include "common/transport/grpc_ep_transport.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "xpd/v1/cluster.grpc.pb.h"

namespace xpd::decode {

// Dispatch/combine messages grow with the batch and the hidden size (128
// tokens x top-8 x 7168 floats is ~29 MiB); the rank's server must accept
// what its peers send.
inline constexpr int kMaxExchangeMessageBytes = 1 << 30;

struct ExpertParallelOptions {
  std::string controller;  // host:port
  std::string group = "decode";
  int32_t size = 1;
  int32_t rank = 0;
  absl::Duration peer_timeout = absl::Seconds(60);  // a silent peer fails the step
  absl::Duration join_timeout = absl::Minutes(10);  // waiting for the whole group
  // Memory for experts a rollout adds next to the ones serving; a Prepare
  // needing more is refused (RESOURCE_EXHAUSTED). Negative = unlimited.
  int64_t spare_expert_bytes = -1;
};

class ExpertParallelRank final : public xpd::v1::PlacementAgent::Service {
 public:
  // Before the model loads: the group's placement from the controller
  // (waiting up to join_timeout for it to answer).
  static absl::StatusOr<std::unique_ptr<ExpertParallelRank>> Create(
      ExpertParallelOptions options, const model::Checkpoint& checkpoint,
      kernels::Precision precision);
  ~ExpertParallelRank() override;

  // Which routed experts to load.
  bool Holds(int64_t layer, int64_t expert) const;

  // After the model loads: routes its MoE layers through the group.
  void Attach(model::DeepSeekModel* model, prometheus::Registry& registry,
              const prometheus::Labels& labels);
  std::vector<grpc::Service*> services();
  // Once the rank's server runs: waits for every member at the controller,
  // then connects to each.
  absl::Status Join(const std::string& advertised_address);
  void Shutdown();

  transport::StepGroup* step_group() { return exchange_.get(); }
  int64_t epoch() const { return exchange_->epoch(); }
  const std::string& group() const { return options_.group; }
  // For the controller heartbeat: routing counts since the previous call.
  void TakeExpertLoad(xpd::v1::ExpertLoad* load);

  grpc::Status Prepare(grpc::ServerContext* context, const xpd::v1::PrepareRequest* request,
                       xpd::v1::PrepareResponse* response) override;
  grpc::Status Commit(grpc::ServerContext* context, const xpd::v1::CommitRequest* request,
                      xpd::v1::CommitResponse* response) override;
  grpc::Status Abort(grpc::ServerContext* context, const xpd::v1::AbortRequest* request,
                     xpd::v1::AbortResponse* response) override;

 private:
  ExpertParallelRank(ExpertParallelOptions options, placement::ExpertPlacement placement);
  // Frees experts `before` gave this rank that `after` does not.
  void ReleaseDropped(const placement::ExpertPlacement& before,
                      const placement::ExpertPlacement& after);

  const ExpertParallelOptions options_;
  const placement::ExpertPlacement initial_;
  transport::GrpcEpTransport transport_;
  std::unique_ptr<transport::EpGroupExchange> exchange_;
  model::DeepSeekModel* model_ = nullptr;
  absl::Mutex rollout_mu_;  // one Prepare/Abort at a time

  prometheus::Histogram* exchange_seconds_ = nullptr;
  prometheus::Family<prometheus::Histogram>* layer_exchange_seconds_ = nullptr;
  std::vector<prometheus::Histogram*> layer_histograms_;  // by MoE index
  prometheus::Counter* exchange_bytes_ = nullptr;
  prometheus::Counter* routed_tokens_ = nullptr;
  prometheus::Gauge* epoch_gauge_ = nullptr;
  prometheus::Counter* prepared_bytes_ = nullptr;
};

}  // namespace xpd::decode
