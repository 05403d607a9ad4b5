#include "services/decode/expert_parallel_rank.h"

#include <algorithm>
#include <iostream>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "common/model/model_weights.h"
#include "common/placement/placement_proto.h"
#include "common/rpc/status_conversion.h"
#include "grpcpp/grpcpp.h"

namespace xpd::decode {
namespace {

using placement::ExpertPlacement;

grpc::Status ToGrpc(const absl::Status& status) { return rpc::ToGrpcStatus(status); }

std::vector<int32_t> Missing(const std::vector<int32_t>& wanted, const std::vector<int32_t>& have) {
  std::vector<int32_t> missing;
  std::set_difference(wanted.begin(), wanted.end(), have.begin(), have.end(),
                      std::back_inserter(missing));
  return missing;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ExpertParallelRank>> ExpertParallelRank::Create(
    ExpertParallelOptions options, const model::Checkpoint& checkpoint,
    kernels::Precision precision) {
  if (options.size < 1 || options.rank < 0 || options.rank >= options.size) {
    return absl::InvalidArgumentError(
        absl::StrCat("--ep-rank ", options.rank, " is not in a group of --ep-size ", options.size));
  }
  const model::ModelConfig& config = checkpoint.config();
  xpd::v1::GetPlacementRequest request;
  request.set_ep_group(options.group);
  xpd::v1::PlacementShape* shape = request.mutable_shape();
  shape->set_num_ranks(options.size);
  shape->set_num_experts(static_cast<int32_t>(config.n_routed_experts));
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    if (config.IsMoeLayer(layer)) shape->add_moe_layers(static_cast<int32_t>(layer));
  }
  if (shape->moe_layers().empty()) {
    return absl::FailedPreconditionError("expert parallelism needs a model with MoE layers");
  }
  absl::StatusOr<model::MlpWeights> expert =
      model::LoadRoutedExpert(checkpoint, precision, shape->moe_layers(0), 0);
  if (!expert.ok()) return expert.status();
  shape->set_expert_bytes(model::MlpBytes(*expert));

  // The controller hands out the group's placement (persisted across
  // restarts); wait for it to come up rather than guess one.
  auto channel = grpc::CreateChannel(options.controller, grpc::InsecureChannelCredentials());
  auto stub = xpd::v1::Controller::NewStub(channel);
  grpc::ClientContext context;
  context.set_wait_for_ready(true);
  context.set_deadline(absl::ToChronoTime(absl::Now() + options.join_timeout));
  xpd::v1::GetPlacementResponse response;
  const grpc::Status status = stub->GetPlacement(&context, request, &response);
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        absl::StrCat("controller ", options.controller,
                                     ": GetPlacement: ", status.error_message()));
  }
  absl::StatusOr<ExpertPlacement> placement = placement::FromProto(response.placement());
  if (!placement.ok()) return placement.status();
  if (placement->num_ranks != options.size || placement->num_experts != shape->num_experts() ||
      placement->layers !=
          std::vector<int32_t>(shape->moe_layers().begin(), shape->moe_layers().end())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "controller ", options.controller, " answered a placement for ", placement->num_ranks,
        " ranks and ", placement->num_experts, " experts; this rank needs ", options.size,
        " ranks and ", shape->num_experts(), " experts"));
  }
  return std::unique_ptr<ExpertParallelRank>(
      new ExpertParallelRank(std::move(options), std::move(*placement)));
}

ExpertParallelRank::ExpertParallelRank(ExpertParallelOptions options, ExpertPlacement placement)
    : options_(std::move(options)),
      initial_(std::move(placement)),
      transport_(options_.group, options_.rank, options_.size,
                 {.max_message_bytes = kMaxExchangeMessageBytes}) {}

ExpertParallelRank::~ExpertParallelRank() { Shutdown(); }

bool ExpertParallelRank::Holds(int64_t layer, int64_t expert) const {
  const int32_t moe = initial_.MoeIndex(static_cast<int32_t>(layer));
  if (moe < 0) return false;
  const std::vector<int32_t> held = initial_.HeldExperts(options_.rank, moe);
  return std::binary_search(held.begin(), held.end(), static_cast<int32_t>(expert));
}

void ExpertParallelRank::Attach(model::DeepSeekModel* model, prometheus::Registry& registry,
                                const prometheus::Labels& labels) {
  model_ = model;
  exchange_ = std::make_unique<transport::EpGroupExchange>(
      transport_, initial_, transport::EpGroupOptions{.timeout = options_.peer_timeout});
  model->set_expert_exchange(exchange_.get());

  // All-to-all latency per MoE layer: bounded by the model's layer count.
  layer_exchange_seconds_ =
      &prometheus::BuildHistogram()
           .Name("xpd_expert_exchange_seconds")
           .Help("Dispatch + combine wall time of one MoE layer, without the expert compute")
           .Labels(labels)
           .Register(registry);
  const prometheus::Histogram::BucketBoundaries buckets = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1};
  for (int32_t layer : initial_.layers) {
    layer_histograms_.push_back(
        &layer_exchange_seconds_->Add({{"layer", std::to_string(layer)}}, buckets));
  }
  exchange_bytes_ = &prometheus::BuildCounter()
                         .Name("xpd_expert_exchange_bytes_total")
                         .Help("Bytes this rank sent in MoE dispatch and combine messages")
                         .Labels(labels)
                         .Register(registry)
                         .Add({});
  routed_tokens_ = &prometheus::BuildCounter()
                        .Name("xpd_expert_tokens_total")
                        .Help("Token-expert pairs computed by the routed experts of this rank")
                        .Labels(labels)
                        .Register(registry)
                        .Add({});
  epoch_gauge_ = &prometheus::BuildGauge()
                      .Name("xpd_rank_placement_epoch")
                      .Help("Expert placement epoch this rank serves")
                      .Labels(labels)
                      .Register(registry)
                      .Add({});
  epoch_gauge_->Set(static_cast<double>(initial_.epoch));
  prepared_bytes_ = &prometheus::BuildCounter()
                         .Name("xpd_expert_prepared_bytes_total")
                         .Help("Expert weights loaded for placement rollouts")
                         .Labels(labels)
                         .Register(registry)
                         .Add({});
  exchange_->set_on_layer([this](const transport::EpLayerTiming& t) {
    const int32_t moe = initial_.MoeIndex(t.layer);
    if (moe >= 0) layer_histograms_[moe]->Observe(t.exchange_seconds);
    exchange_bytes_->Increment(static_cast<double>(t.bytes_sent));
    routed_tokens_->Increment(static_cast<double>(t.items_served));
  });
  exchange_->set_on_switch([this](const ExpertPlacement& before, const ExpertPlacement& after) {
    ReleaseDropped(before, after);
    epoch_gauge_->Set(static_cast<double>(after.epoch));
    std::cerr << "placement: rank " << options_.rank << " of group " << options_.group
              << " switched to epoch " << after.epoch << "\n";
  });
}

std::vector<grpc::Service*> ExpertParallelRank::services() { return {transport_.service(), this}; }

absl::Status ExpertParallelRank::Join(const std::string& advertised_address) {
  auto channel = grpc::CreateChannel(options_.controller, grpc::InsecureChannelCredentials());
  auto stub = xpd::v1::Controller::NewStub(channel);
  xpd::v1::JoinExpertGroupRequest request;
  request.set_ep_group(options_.group);
  request.set_group_size(options_.size);
  request.set_rank(options_.rank);
  request.set_address(advertised_address);
  const absl::Time deadline = absl::Now() + options_.join_timeout;
  grpc::ClientContext context;
  context.set_wait_for_ready(true);
  context.set_deadline(absl::ToChronoTime(deadline));
  xpd::v1::JoinExpertGroupResponse response;
  const grpc::Status status = stub->JoinExpertGroup(&context, request, &response);
  if (!status.ok()) {
    return absl::Status(
        static_cast<absl::StatusCode>(status.error_code()),
        absl::StrCat("joining expert-parallel group ", options_.group, " at controller ",
                     options_.controller, ": ", status.error_message()));
  }
  if (response.addresses_size() != options_.size) {
    return absl::FailedPreconditionError(
        absl::StrCat("the controller listed ", response.addresses_size(), " members of ",
                     options_.group, ", expected ", options_.size));
  }
  return transport_.Connect({response.addresses().begin(), response.addresses().end()}, deadline);
}

void ExpertParallelRank::Shutdown() { transport_.Shutdown(); }

void ExpertParallelRank::TakeExpertLoad(xpd::v1::ExpertLoad* load) {
  int64_t epoch = 0;
  std::vector<int64_t> tokens = exchange_->TakeExpertLoad(&epoch);
  load->set_epoch(epoch);
  load->set_num_experts(initial_.num_experts);
  load->mutable_layers()->Assign(initial_.layers.begin(), initial_.layers.end());
  load->mutable_tokens()->Assign(tokens.begin(), tokens.end());
}

void ExpertParallelRank::ReleaseDropped(const ExpertPlacement& before,
                                        const ExpertPlacement& after) {
  for (size_t l = 0; l < before.layers.size(); ++l) {
    const int32_t moe = static_cast<int32_t>(l);
    model_->ReleaseRoutedExperts(before.layers[l], Missing(before.HeldExperts(options_.rank, moe),
                                                           after.HeldExperts(options_.rank, moe)));
  }
}

grpc::Status ExpertParallelRank::Prepare(grpc::ServerContext*,
                                         const xpd::v1::PrepareRequest* request,
                                         xpd::v1::PrepareResponse* response) {
  absl::StatusOr<ExpertPlacement> next = placement::FromProto(request->placement());
  if (!next.ok()) return ToGrpc(next.status());
  absl::MutexLock lock(&rollout_mu_);
  const ExpertPlacement current = exchange_->placement();
  if (next->layers != current.layers || next->num_ranks != current.num_ranks ||
      next->num_experts != current.num_experts) {
    return ToGrpc(absl::InvalidArgumentError(
        absl::StrCat("placement epoch ", next->epoch, " does not fit group ", options_.group)));
  }
  // A previous prepared epoch that was never committed: drop its extra experts.
  if (std::optional<ExpertPlacement> stale = exchange_->staged(); stale.has_value()) {
    (void)exchange_->Abort(stale->epoch);
    ReleaseDropped(*stale, current);
  }
  std::vector<std::vector<int32_t>> to_load(next->layers.size());
  int64_t needed = 0;
  for (size_t l = 0; l < next->layers.size(); ++l) {
    for (int32_t e : next->HeldExperts(options_.rank, static_cast<int32_t>(l))) {
      if (!model_->holds_expert(next->layers[l], e)) to_load[l].push_back(e);
    }
    needed += static_cast<int64_t>(to_load[l].size()) * model_->routed_expert_bytes();
  }
  if (options_.spare_expert_bytes >= 0 && needed > options_.spare_expert_bytes) {
    return ToGrpc(absl::ResourceExhaustedError(
        absl::StrCat("rank ", options_.rank, " of ", options_.group, " needs ", needed,
                     " bytes for the new experts of epoch ", next->epoch, " but has ",
                     options_.spare_expert_bytes, " bytes of spare expert memory")));
  }
  int64_t loaded = 0;
  for (size_t l = 0; l < next->layers.size(); ++l) {
    absl::StatusOr<int64_t> bytes = model_->LoadRoutedExperts(next->layers[l], to_load[l]);
    if (!bytes.ok()) {
      ReleaseDropped(*next, current);
      return ToGrpc(bytes.status());
    }
    loaded += *bytes;
  }
  if (absl::Status status = exchange_->Stage(*next); !status.ok()) {
    ReleaseDropped(*next, current);
    return ToGrpc(status);
  }
  prepared_bytes_->Increment(static_cast<double>(loaded));
  response->set_bytes_loaded(loaded);
  std::cerr << "placement: rank " << options_.rank << " prepared epoch " << next->epoch << " ("
            << loaded << " bytes loaded)\n";
  return grpc::Status::OK;
}

grpc::Status ExpertParallelRank::Commit(grpc::ServerContext*, const xpd::v1::CommitRequest* request,
                                        xpd::v1::CommitResponse*) {
  if (absl::Status status = exchange_->RequestCommit(request->epoch()); !status.ok()) {
    return ToGrpc(status);
  }
  // The group switches within a step or two of the last rank's commit.
  return ToGrpc(exchange_->WaitForEpoch(request->epoch(), absl::Now() + options_.peer_timeout));
}

grpc::Status ExpertParallelRank::Abort(grpc::ServerContext*, const xpd::v1::AbortRequest* request,
                                       xpd::v1::AbortResponse*) {
  absl::MutexLock lock(&rollout_mu_);
  const std::optional<ExpertPlacement> staged = exchange_->staged();
  if (absl::Status status = exchange_->Abort(request->epoch()); !status.ok()) {
    return ToGrpc(status);
  }
  if (staged.has_value() && staged->epoch == request->epoch()) {
    ReleaseDropped(*staged, exchange_->placement());
  }
  return grpc::Status::OK;
}

}  // namespace xpd::decode
