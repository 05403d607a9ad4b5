#include "common/cluster/rank_agent.h"

#include <algorithm>
#include <iostream>
#include <thread>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"

namespace xpd::cluster {
namespace {

// Each RPC gets at most this long (and at least one interval).
constexpr absl::Duration kMinRpcTimeout = absl::Seconds(2);

std::shared_ptr<grpc::Channel> ControllerChannel(const std::string& address) {
  grpc::ChannelArguments args;
  // Reconnect quickly after a controller restart (the defaults back off to 2 min).
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

}  // namespace

struct RankAgent::State {
  explicit State(RankAgentOptions o) : options(std::move(o)) {}

  // One round: register when not registered, otherwise heartbeat (and
  // register again right away when the controller has forgotten us).
  void Tick();
  grpc::Status Call(const std::function<grpc::Status(grpc::ClientContext*)>& rpc);
  xpd::v1::RankLoad Load() const { return options.load ? options.load() : xpd::v1::RankLoad(); }
  void Run();
  void ReportStatus(const grpc::Status& status);

  const RankAgentOptions options;
  std::unique_ptr<xpd::v1::Controller::Stub> stub;
  std::thread thread;

  mutable absl::Mutex mu;
  bool stop ABSL_GUARDED_BY(mu) = false;
  std::string rank_id ABSL_GUARDED_BY(mu);
  grpc::ClientContext* in_flight ABSL_GUARDED_BY(mu) = nullptr;
  bool reported_failure = false;  // agent thread only: log failures once
};

grpc::Status RankAgent::State::Call(const std::function<grpc::Status(grpc::ClientContext*)>& rpc) {
  grpc::ClientContext context;
  context.set_deadline(
      absl::ToChronoTime(absl::Now() + std::max(options.interval, kMinRpcTimeout)));
  {
    absl::MutexLock lock(&mu);
    if (stop) return grpc::Status::CANCELLED;
    in_flight = &context;
  }
  grpc::Status status = rpc(&context);
  absl::MutexLock lock(&mu);
  in_flight = nullptr;
  return status;
}

void RankAgent::State::ReportStatus(const grpc::Status& status) {
  if (status.ok()) {
    if (reported_failure) std::cerr << "rank agent: controller reachable again\n";
    reported_failure = false;
  } else if (!reported_failure && status.error_code() != grpc::StatusCode::CANCELLED) {
    // Once per outage; the agent keeps trying quietly.
    std::cerr << "rank agent: controller " << options.controller_address << ": "
              << status.error_message() << " (will keep trying)\n";
    reported_failure = true;
  }
}

void RankAgent::State::Tick() {
  std::string id;
  {
    absl::MutexLock lock(&mu);
    id = rank_id;
  }
  if (!id.empty()) {
    xpd::v1::HeartbeatRequest request;
    request.set_rank_id(id);
    *request.mutable_load() = Load();
    if (options.expert_load) options.expert_load(request.mutable_expert_load());
    xpd::v1::HeartbeatResponse response;
    const grpc::Status status = Call(
        [&](grpc::ClientContext* context) { return stub->Heartbeat(context, request, &response); });
    if (status.error_code() != grpc::StatusCode::NOT_FOUND) {
      ReportStatus(status);
      return;
    }
    absl::MutexLock lock(&mu);
    rank_id.clear();  // the controller restarted and forgot us
  }
  xpd::v1::RegisterRequest request;
  request.set_role(options.role);
  request.set_address(options.address);
  request.set_rank(options.rank);
  *request.mutable_load() = Load();
  request.set_ep_group(options.ep_group);
  if (options.placement_epoch) request.set_placement_epoch(options.placement_epoch());
  xpd::v1::RegisterResponse response;
  const grpc::Status status = Call(
      [&](grpc::ClientContext* context) { return stub->Register(context, request, &response); });
  ReportStatus(status);
  if (status.ok()) {
    absl::MutexLock lock(&mu);
    rank_id = response.rank_id();
  }
}

void RankAgent::State::Run() {
  while (true) {
    Tick();
    absl::MutexLock lock(&mu);
    mu.AwaitWithTimeout(absl::Condition(&stop), options.interval);
    if (stop) return;
  }
}

RankAgent::RankAgent(RankAgentOptions options)
    : state_(std::make_unique<State>(std::move(options))) {}

RankAgent::~RankAgent() {
  {
    absl::MutexLock lock(&state_->mu);
    state_->stop = true;
    if (state_->in_flight != nullptr) state_->in_flight->TryCancel();
  }
  if (state_->thread.joinable()) state_->thread.join();
}

void RankAgent::Start() {
  if (state_->thread.joinable()) return;
  state_->stub =
      xpd::v1::Controller::NewStub(ControllerChannel(state_->options.controller_address));
  state_->thread = std::thread([state = state_.get()] { state->Run(); });
}

std::string RankAgent::rank_id() const {
  absl::MutexLock lock(&state_->mu);
  return state_->rank_id;
}

}  // namespace xpd::cluster
