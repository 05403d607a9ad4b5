// The controller's EP group RPCs over real gRPC on loopback: placements and
// their persistence, joins, load windows and status, and rollouts against
// fake PlacementAgent servers.
#include "services/controller/placement_manager.h"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/placement/placement_proto.h"
#include "common/rpc/grpc_server.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"
#include "services/controller/configmap_placement_store.h"
#include "services/controller/controller_service.h"
#include "services/controller/fake_kube_api.h"
#include "services/controller/placement_store.h"
#include "xpd/v1/cluster.grpc.pb.h"

namespace xpd::controller {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Lt;
using ::testing::Not;

constexpr char kGroup[] = "decode";
constexpr int64_t kExpertBytes = 1000;
// Generous: only ever reached when something is broken.
constexpr auto kRpcTimeout = std::chrono::seconds(30);

std::chrono::system_clock::time_point Deadline(std::chrono::milliseconds in = kRpcTimeout) {
  return std::chrono::system_clock::now() + in;
}

// A rank's PlacementAgent: counts calls, can fail Prepare or hold it until
// released (or the call is cancelled).
class FakeAgent : public xpd::v1::PlacementAgent::Service {
 public:
  grpc::Status Prepare(grpc::ServerContext* context, const xpd::v1::PrepareRequest* request,
                       xpd::v1::PrepareResponse* response) override {
    {
      absl::MutexLock lock(&mu_);
      ++prepares_;
      prepared_epoch_ = request->placement().epoch();
    }
    if (hold_prepare_) {
      prepare_entered_.Notify();
      // Polls the cancellation: a fake has no other way to notice it.
      while (!release_prepare_.WaitForNotificationWithTimeout(absl::Milliseconds(10))) {
        if (context->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
      }
    }
    if (!prepare_status_.ok()) return prepare_status_;
    response->set_bytes_loaded(123);
    return grpc::Status::OK;
  }
  grpc::Status Commit(grpc::ServerContext* context, const xpd::v1::CommitRequest* request,
                      xpd::v1::CommitResponse* response) override {
    absl::MutexLock lock(&mu_);
    ++commits_;
    committed_epoch_ = request->epoch();
    return grpc::Status::OK;
  }
  grpc::Status Abort(grpc::ServerContext* context, const xpd::v1::AbortRequest* request,
                     xpd::v1::AbortResponse* response) override {
    absl::MutexLock lock(&mu_);
    ++aborts_;
    return grpc::Status::OK;
  }

  int prepares() {
    absl::MutexLock lock(&mu_);
    return prepares_;
  }
  int commits() {
    absl::MutexLock lock(&mu_);
    return commits_;
  }
  int aborts() {
    absl::MutexLock lock(&mu_);
    return aborts_;
  }
  int64_t prepared_epoch() {
    absl::MutexLock lock(&mu_);
    return prepared_epoch_;
  }
  int64_t committed_epoch() {
    absl::MutexLock lock(&mu_);
    return committed_epoch_;
  }

  grpc::Status prepare_status_ = grpc::Status::OK;  // set before any call
  bool hold_prepare_ = false;                       // set before any call
  absl::Notification prepare_entered_;
  absl::Notification release_prepare_;

 private:
  absl::Mutex mu_;
  int prepares_ = 0, commits_ = 0, aborts_ = 0;
  int64_t prepared_epoch_ = -1, committed_epoch_ = -1;
};

struct AgentServer {
  FakeAgent agent;
  std::unique_ptr<rpc::GrpcServer> server;
};

class PlacementManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto dir = std::filesystem::path(::testing::TempDir()) /
                     ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    file_ = (dir / "placements.json").string();
  }
  void TearDown() override { Stop(); }

  PlacementManagerOptions Options() {
    PlacementManagerOptions options;
    options.store = std::make_shared<FilePlacementStore>(file_);
    options.clock = [this] { return absl::FromUnixMillis(now_ms_.load()); };
    options.registry = registry_.get();
    options.metric_labels = {{"role", "controller"}, {"rank", "0"}, {"model", ""}};
    options.policy.min_interval = absl::ZeroDuration();
    return options;
  }

  void Start(PlacementManagerOptions options) {
    absl::StatusOr<std::unique_ptr<PlacementManager>> manager =
        PlacementManager::Create(std::move(options));
    ASSERT_TRUE(manager.ok()) << manager.status();
    manager_ = *std::move(manager);
    service_ = std::make_unique<ControllerService>(
        ControllerOptions{.clock = [this] { return absl::FromUnixMillis(now_ms_.load()); },
                          .placement = manager_.get()});
    auto server = rpc::GrpcServer::Start({.services = {service_.get()}});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    stub_ = xpd::v1::Controller::NewStub(
        grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
    manager_->StartAutoRebalance();
  }
  void Start() { Start(Options()); }

  // Like a controller process exiting: the next Start reads the file again.
  void Stop() {
    if (manager_) manager_->Shutdown();
    server_.reset();
    service_.reset();
    manager_.reset();
  }

  static xpd::v1::PlacementShape Shape(int ranks = 2, int experts = 4,
                                       std::vector<int32_t> layers = {1, 2}) {
    xpd::v1::PlacementShape shape;
    shape.set_num_ranks(ranks);
    shape.set_num_experts(experts);
    shape.mutable_moe_layers()->Add(layers.begin(), layers.end());
    shape.set_expert_bytes(kExpertBytes);
    return shape;
  }

  grpc::Status GetPlacement(const xpd::v1::PlacementShape& shape, xpd::v1::Placement* out,
                            const std::string& group = kGroup) {
    grpc::ClientContext context;
    context.set_deadline(Deadline());
    xpd::v1::GetPlacementRequest request;
    request.set_ep_group(group);
    *request.mutable_shape() = shape;
    xpd::v1::GetPlacementResponse response;
    grpc::Status status = stub_->GetPlacement(&context, request, &response);
    if (out != nullptr) *out = response.placement();
    return status;
  }

  grpc::Status Join(int rank, int size, const std::string& address,
                    std::chrono::milliseconds timeout, std::vector<std::string>* addresses) {
    grpc::ClientContext context;
    context.set_deadline(Deadline(timeout));
    xpd::v1::JoinExpertGroupRequest request;
    request.set_ep_group(kGroup);
    request.set_group_size(size);
    request.set_rank(rank);
    request.set_address(address);
    xpd::v1::JoinExpertGroupResponse response;
    grpc::Status status = stub_->JoinExpertGroup(&context, request, &response);
    if (addresses != nullptr)
      addresses->assign(response.addresses().begin(), response.addresses().end());
    return status;
  }

  std::string Register(int rank, const std::string& address) {
    grpc::ClientContext context;
    context.set_deadline(Deadline());
    xpd::v1::RegisterRequest request;
    request.set_role(xpd::v1::ROLE_DECODE);
    request.set_address(address);
    request.set_rank(rank);
    request.set_ep_group(kGroup);
    xpd::v1::RegisterResponse response;
    EXPECT_TRUE(stub_->Register(&context, request, &response).ok());
    return response.rank_id();
  }

  // Per layer 1 and 2: expert 0 very hot, 1 warm, 2 and 3 cool. With 4
  // experts on 2 ranks (0,1 | 2,3) rank 0 carries almost everything.
  static xpd::v1::ExpertLoad SkewedLoad(int64_t epoch = 0) {
    xpd::v1::ExpertLoad load;
    load.set_epoch(epoch);
    load.set_num_experts(4);
    for (int32_t layer : {1, 2}) {
      load.add_layers(layer);
      for (int64_t tokens : {400, 100, 50, 10}) load.add_tokens(tokens);
    }
    return load;
  }

  grpc::Status Heartbeat(const std::string& rank_id, const xpd::v1::ExpertLoad& load) {
    grpc::ClientContext context;
    context.set_deadline(Deadline());
    xpd::v1::HeartbeatRequest request;
    request.set_rank_id(rank_id);
    *request.mutable_expert_load() = load;
    xpd::v1::HeartbeatResponse response;
    return stub_->Heartbeat(&context, request, &response);
  }

  xpd::v1::PlacementStatusResponse Status(const std::string& group = "") {
    grpc::ClientContext context;
    context.set_deadline(Deadline());
    xpd::v1::PlacementStatusRequest request;
    request.set_ep_group(group);
    xpd::v1::PlacementStatusResponse response;
    grpc::Status status = stub_->PlacementStatus(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  grpc::Status Rebalance(bool dry_run, xpd::v1::RebalanceResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(Deadline());
    xpd::v1::RebalanceRequest request;
    request.set_ep_group(kGroup);
    request.set_dry_run(dry_run);
    return stub_->Rebalance(&context, request, response);
  }

  // Two fake ranks serving PlacementAgent, joined to the group.
  void StartAgents(int count = 2) {
    for (int r = 0; r < count; ++r) {
      auto agent = std::make_unique<AgentServer>();
      auto server = rpc::GrpcServer::Start({.services = {&agent->agent}});
      ASSERT_TRUE(server.ok()) << server.status();
      agent->server = *std::move(server);
      agents_.push_back(std::move(agent));
    }
  }
  void JoinAgents() {
    std::vector<std::thread> joins;
    for (size_t r = 0; r < agents_.size(); ++r) {
      joins.emplace_back([this, r] {
        EXPECT_TRUE(Join(static_cast<int>(r), static_cast<int>(agents_.size()),
                         agents_[r]->server->address(), kRpcTimeout, nullptr)
                        .ok());
      });
    }
    for (std::thread& join : joins) join.join();
  }
  // Placement, two joined fake agents (started here unless the test did),
  // and a skewed load window.
  void SkewedGroup() {
    ASSERT_TRUE(GetPlacement(Shape(), nullptr).ok());
    if (agents_.empty()) StartAgents();
    JoinAgents();
    const std::string id = Register(0, agents_[0]->server->address());
    ASSERT_TRUE(Heartbeat(id, SkewedLoad()).ok());
  }

  std::string Metrics() {
    std::ostringstream out;
    prometheus::TextSerializer().Serialize(out, registry_->Collect());
    return out.str();
  }
  // The value of the series `name` carrying every label of `labels` (k="v"
  // strings), -1 when there is none.
  double Metric(const std::string& name, const std::vector<std::string>& labels) {
    std::istringstream lines(Metrics());
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind(name + "{", 0) != 0) continue;
      bool all = true;
      for (const std::string& label : labels) all = all && line.find(label) != std::string::npos;
      if (all) return std::stod(line.substr(line.rfind(' ') + 1));
    }
    return -1;
  }

  int64_t FileEpoch() {
    absl::StatusOr<StoredGroups> stored = LoadPlacementFile(file_);
    EXPECT_TRUE(stored.ok()) << stored.status();
    return stored.ok() && stored->contains(kGroup) ? stored->at(kGroup).placement.epoch : -1;
  }

  std::string file_;
  std::atomic<int64_t> now_ms_{1'700'000'000'000};
  std::shared_ptr<prometheus::Registry> registry_ = std::make_shared<prometheus::Registry>();
  std::vector<std::unique_ptr<AgentServer>> agents_;
  std::unique_ptr<PlacementManager> manager_;
  std::unique_ptr<ControllerService> service_;
  std::unique_ptr<rpc::GrpcServer> server_;
  std::unique_ptr<xpd::v1::Controller::Stub> stub_;
};

TEST_F(PlacementManagerTest, GetPlacementCreatesPersistsAndSurvivesARestart) {
  PlacementManagerOptions options = Options();
  options.redundant_experts = 2;
  Start(options);
  xpd::v1::Placement first;
  ASSERT_TRUE(GetPlacement(Shape(), &first).ok());
  EXPECT_EQ(first.epoch(), 0);
  EXPECT_EQ(first.num_ranks(), 2);
  EXPECT_EQ(first.slots_per_layer(), 6);
  ASSERT_EQ(first.layers_size(), 2);
  EXPECT_THAT(first.layers(1).slot_expert(), ElementsAre(0, 1, 2, 3, 0, 1));
  EXPECT_EQ(FileEpoch(), 0);

  // A placement that InitialPlacement would not produce, written while the
  // controller is down: the restarted controller must hand out exactly it.
  Stop();
  absl::StatusOr<StoredGroups> stored = LoadPlacementFile(file_);
  ASSERT_TRUE(stored.ok());
  placement::ExpertPlacement& p = (*stored)[kGroup].placement;
  p.epoch = 5;
  p.phy2log[0] = {3, 2, 1, 0, 3, 3};
  ASSERT_TRUE(SavePlacementFile(file_, *stored).ok());
  Start(options);
  xpd::v1::Placement again;
  ASSERT_TRUE(GetPlacement(Shape(), &again).ok());
  EXPECT_EQ(again.SerializeAsString(), placement::ToProto(p).SerializeAsString());
}

// The same through a Kubernetes ConfigMap (a fake API server): the manager
// does not care where its state lives.
TEST_F(PlacementManagerTest, ConfigMapStoreKeepsThePlacementAcrossARestart) {
  absl::StatusOr<std::unique_ptr<FakeKubeApi>> api = FakeKubeApi::Start("xpd", "p", "t");
  ASSERT_TRUE(api.ok()) << api.status();
  const std::string seed = "{\"version\": 1, \"groups\": {}}";
  (*api)->SetData(FakeKubeApi::Data{{"seed.json", seed}});
  const std::string token_file = file_ + ".token";
  std::ofstream(token_file) << "t";
  const auto options = [&] {
    absl::StatusOr<std::unique_ptr<ConfigMapPlacementStore>> store =
        ConfigMapPlacementStore::Create({.ns = "xpd", .name = "p"},
                                        {.api_url = (*api)->url(), .token_file = token_file});
    EXPECT_TRUE(store.ok()) << store.status();
    PlacementManagerOptions o = Options();
    o.store = std::shared_ptr<PlacementStore>(std::move(store).value());
    return o;
  };
  Start(options());
  xpd::v1::Placement first;
  ASSERT_TRUE(GetPlacement(Shape(), &first).ok());
  // Persisted before the answer: the ConfigMap already holds it.
  std::optional<FakeKubeApi::Data> data = (*api)->data();
  ASSERT_TRUE(data && data->contains("placement.json"));
  EXPECT_EQ(data->at("seed.json"), seed);
  absl::StatusOr<StoredGroups> stored = StoredGroupsFromJson(data->at("placement.json"));
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(placement::ToProto(stored->at(kGroup).placement).SerializeAsString(),
            first.SerializeAsString());

  // Changed while the controller is down: the restarted one hands out exactly it.
  Stop();
  placement::ExpertPlacement& p = (*stored)[kGroup].placement;
  p.epoch = 5;
  p.phy2log[0] = {3, 2, 1, 0};
  (*api)->SetData(
      FakeKubeApi::Data{{"seed.json", seed}, {"placement.json", StoredGroupsToJson(*stored)}});
  Start(options());
  xpd::v1::Placement again;
  ASSERT_TRUE(GetPlacement(Shape(), &again).ok());
  EXPECT_EQ(again.SerializeAsString(), placement::ToProto(p).SerializeAsString());
  Stop();

  // A ConfigMap the controller may not read stops the start.
  (*api)->FailWith(403, "");
  absl::StatusOr<std::unique_ptr<PlacementManager>> manager = PlacementManager::Create(options());
  ASSERT_FALSE(manager.ok());
  EXPECT_THAT(manager.status().message(), HasSubstr("placement ConfigMap xpd/p"));
  EXPECT_THAT(manager.status().message(), HasSubstr("HTTP 403 Forbidden"));
}

TEST_F(PlacementManagerTest, ShapeMismatchIsFailedPreconditionNamingTheField) {
  Start();
  ASSERT_TRUE(GetPlacement(Shape(), nullptr).ok());
  grpc::Status status = GetPlacement(Shape(2, 8), nullptr);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("shape.num_experts = 8"));
  status = GetPlacement(Shape(4, 4), nullptr);
  EXPECT_THAT(status.error_message(), HasSubstr("shape.num_ranks = 4"));
  status = GetPlacement(Shape(2, 4, {1, 3}), nullptr);
  EXPECT_THAT(status.error_message(), HasSubstr("shape.moe_layers = [1,3]"));
  // An invalid shape is the caller's fault.
  EXPECT_EQ(GetPlacement(Shape(0, 4), nullptr, "other").error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  // Slots that do not divide over the ranks: the controller's configuration.
  status = GetPlacement(Shape(3, 4), nullptr, "other");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("not a multiple of shape.num_ranks 3"));
}

TEST_F(PlacementManagerTest, PersistedPlacementOfAnotherModelIsReplaced) {
  Start();
  ASSERT_TRUE(GetPlacement(Shape(), nullptr).ok());
  Stop();
  Start();
  xpd::v1::Placement placement;
  ASSERT_TRUE(GetPlacement(Shape(2, 8), &placement).ok());
  EXPECT_EQ(placement.num_experts(), 8);
  EXPECT_EQ(placement.epoch(), 1);  // epochs never go back
  EXPECT_EQ(FileEpoch(), 1);
}

TEST_F(PlacementManagerTest, CorruptPlacementFileStopsTheStartNamingIt) {
  std::ofstream(file_) << "{\"groups\": {\"decode\": 7}}";
  absl::StatusOr<std::unique_ptr<PlacementManager>> manager = PlacementManager::Create(Options());
  ASSERT_FALSE(manager.ok());
  EXPECT_THAT(manager.status().message(), HasSubstr(file_));
  EXPECT_THAT(manager.status().message(), HasSubstr("not a JSON object"));
}

TEST_F(PlacementManagerTest, JoinBlocksUntilEveryRankJoinedOrTheDeadline) {
  Start();
  std::vector<std::string> addresses;
  grpc::Status status = Join(0, 3, "a0", std::chrono::milliseconds(200), &addresses);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_THAT(status.error_message(), HasSubstr("missing ranks 1,2"));

  std::vector<std::vector<std::string>> seen(3);
  std::vector<std::thread> joins;
  for (int r = 0; r < 3; ++r) {
    joins.emplace_back(
        [&, r] { EXPECT_TRUE(Join(r, 3, absl::StrCat("a", r), kRpcTimeout, &seen[r]).ok()); });
  }
  for (std::thread& join : joins) join.join();
  for (const auto& s : seen) EXPECT_THAT(s, ElementsAre("a0", "a1", "a2"));

  // A restarted rank joins again: new address, answered at once.
  ASSERT_TRUE(Join(1, 3, "b1", kRpcTimeout, &addresses).ok());
  EXPECT_THAT(addresses, ElementsAre("a0", "b1", "a2"));
  status = Join(1, 4, "b1", kRpcTimeout, nullptr);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("group_size = 4"));
}

TEST_F(PlacementManagerTest, SkewedLoadsShowInStatusAndAgeOut) {
  Start();
  ASSERT_TRUE(GetPlacement(Shape(), nullptr).ok());
  const std::string r0 = Register(0, "127.0.0.1:1");
  const std::string r1 = Register(1, "127.0.0.1:2");
  ASSERT_TRUE(Heartbeat(r0, SkewedLoad()).ok());
  ASSERT_TRUE(Heartbeat(r1, SkewedLoad()).ok());

  xpd::v1::PlacementStatusResponse status = Status();
  EXPECT_EQ(status.ep_group(), kGroup);
  ASSERT_EQ(status.ranks_size(), 2);
  EXPECT_EQ(status.ranks(0).ep_group(), kGroup);
  EXPECT_EQ(status.placement().epoch(), 0);
  // Per layer rank 0 serves 2 * (400 + 100), rank 1 2 * (50 + 10): the
  // busiest over the mean is 1000 / 560.
  EXPECT_NEAR(status.balance(), 1000.0 / 560.0, 1e-9);
  ASSERT_EQ(status.layer_balance_size(), 2);
  EXPECT_EQ(status.layer_balance(1).layer(), 2);
  EXPECT_NEAR(status.layer_balance(1).balance(), 1000.0 / 560.0, 1e-9);
  ASSERT_EQ(status.rank_load_size(), 2);
  EXPECT_EQ(status.rank_load(0).tokens(), 2000);
  EXPECT_EQ(status.rank_load(1).tokens(), 240);
  EXPECT_EQ(status.window_tokens(), 2240);
  ASSERT_EQ(status.hottest_size(), 8);
  EXPECT_EQ(status.hottest(0).layer(), 1);
  EXPECT_EQ(status.hottest(0).expert(), 0);
  EXPECT_EQ(status.hottest(0).tokens(), 800);
  EXPECT_EQ(status.hottest(0).replicas(), 1);
  EXPECT_EQ(status.hottest(1).layer(), 2);
  EXPECT_EQ(status.hottest(1).expert(), 0);
  EXPECT_EQ(status.hottest(2).expert(), 1);
  EXPECT_NEAR(Metric("xpd_expert_balance_ratio", {"ep_group=\"decode\""}), 1000.0 / 560.0, 1e-9);
  EXPECT_NEAR(Metric("xpd_expert_layer_balance_ratio", {"ep_group=\"decode\"", "layer=\"2\""}),
              1000.0 / 560.0, 1e-9);
  EXPECT_EQ(Metric("xpd_expert_window_tokens", {"ep_group=\"decode\"", "role=\"controller\""}),
            2240);

  // A malformed report is refused; the heartbeat's liveness still counts.
  xpd::v1::ExpertLoad bad = SkewedLoad();
  bad.add_tokens(1);
  grpc::Status refused = Heartbeat(r0, bad);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(refused.error_message(), HasSubstr("expert_load.tokens has 9 values"));

  now_ms_ += 61'000;  // past the 60 s window (and its bucket)
  status = Status();
  EXPECT_EQ(status.window_tokens(), 0);
  EXPECT_EQ(status.balance(), 1.0);
  EXPECT_EQ(status.hottest_size(), 0);
}

TEST_F(PlacementManagerTest, DryRunPlansWithoutRollingOut) {
  Start();
  SkewedGroup();
  xpd::v1::RebalanceResponse response;
  ASSERT_TRUE(Rebalance(/*dry_run=*/true, &response).ok());
  EXPECT_EQ(response.outcome(), "planned");
  EXPECT_EQ(response.epoch(), 0);
  EXPECT_THAT(response.predicted_balance(), Lt(response.current_balance()));
  EXPECT_GT(response.bytes_to_move(), 0);
  EXPECT_EQ(response.proposed().epoch(), 1);
  EXPECT_EQ(agents_[0]->agent.prepares(), 0);
  EXPECT_EQ(Status().placement().epoch(), 0);
}

TEST_F(PlacementManagerTest, RolloutCommitsOnEveryRankAndPersists) {
  Start();
  SkewedGroup();
  xpd::v1::RebalanceResponse response;
  ASSERT_TRUE(Rebalance(/*dry_run=*/false, &response).ok());
  EXPECT_EQ(response.outcome(), "committed") << response.reason();
  EXPECT_EQ(response.epoch(), 1);
  EXPECT_THAT(response.reason(), HasSubstr("forced"));
  for (const auto& agent : agents_) {
    EXPECT_EQ(agent->agent.prepares(), 1);
    EXPECT_EQ(agent->agent.prepared_epoch(), 1);
    EXPECT_EQ(agent->agent.commits(), 1);
    EXPECT_EQ(agent->agent.committed_epoch(), 1);
    EXPECT_EQ(agent->agent.aborts(), 0);
  }
  EXPECT_EQ(FileEpoch(), 1);
  const xpd::v1::PlacementStatusResponse status = Status();
  EXPECT_EQ(status.placement().SerializeAsString(), response.proposed().SerializeAsString());
  EXPECT_NEAR(status.balance(), response.predicted_balance(), 1e-9);
  EXPECT_EQ(status.last_rebalance().outcome(), "committed");
  EXPECT_EQ(status.last_rebalance().bytes_moved(), response.bytes_to_move());
  EXPECT_EQ(Metric("xpd_rebalances_total", {"ep_group=\"decode\"", "outcome=\"committed\""}), 1);
  EXPECT_EQ(Metric("xpd_rebalances_total", {"ep_group=\"decode\"", "outcome=\"aborted\""}), 0);
  EXPECT_EQ(Metric("xpd_placement_epoch", {"ep_group=\"decode\"", "role=\"controller\""}), 1);
  EXPECT_EQ(Metric("xpd_rebalance_duration_seconds_count", {"ep_group=\"decode\""}), 1);
  EXPECT_EQ(Metric("xpd_rebalance_moved_bytes_total", {"ep_group=\"decode\""}),
            response.bytes_to_move());

  // The committed placement is what a restarted controller hands out.
  Stop();
  Start();
  xpd::v1::Placement placement;
  ASSERT_TRUE(GetPlacement(Shape(), &placement).ok());
  EXPECT_EQ(placement.SerializeAsString(), response.proposed().SerializeAsString());
}

TEST_F(PlacementManagerTest, FailedPrepareAbortsOnEveryRankAndKeepsThePlacement) {
  Start();
  StartAgents();
  agents_[1]->agent.prepare_status_ =
      grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "no spare expert memory");
  ASSERT_TRUE(GetPlacement(Shape(), nullptr).ok());
  JoinAgents();
  ASSERT_TRUE(Heartbeat(Register(0, "127.0.0.1:1"), SkewedLoad()).ok());

  xpd::v1::RebalanceResponse response;
  ASSERT_TRUE(Rebalance(/*dry_run=*/false, &response).ok());
  EXPECT_EQ(response.outcome(), "aborted");
  EXPECT_THAT(response.reason(), HasSubstr("rank 1"));
  EXPECT_THAT(response.reason(), HasSubstr("RESOURCE_EXHAUSTED: no spare expert memory"));
  EXPECT_EQ(response.epoch(), 0);
  for (const auto& agent : agents_) {
    EXPECT_EQ(agent->agent.prepares(), 1);
    EXPECT_EQ(agent->agent.aborts(), 1);
    EXPECT_EQ(agent->agent.commits(), 0);
  }
  EXPECT_EQ(Status().placement().epoch(), 0);
  EXPECT_EQ(Status().last_rebalance().outcome(), "aborted");
  EXPECT_EQ(FileEpoch(), 0);
  EXPECT_EQ(Metric("xpd_rebalances_total", {"ep_group=\"decode\"", "outcome=\"aborted\""}), 1);
  EXPECT_EQ(Metric("xpd_rebalance_moved_bytes_total", {"ep_group=\"decode\""}), 0);
}

TEST_F(PlacementManagerTest, SecondRebalanceDuringARolloutIsAborted) {
  Start();
  StartAgents();
  agents_[0]->agent.hold_prepare_ = true;
  SkewedGroup();
  xpd::v1::RebalanceResponse first;
  std::thread rollout([&] { EXPECT_TRUE(Rebalance(false, &first).ok()); });
  agents_[0]->agent.prepare_entered_.WaitForNotification();
  xpd::v1::RebalanceResponse second;
  grpc::Status status = Rebalance(false, &second);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_THAT(status.error_message(), HasSubstr("a rollout is in progress"));
  agents_[0]->agent.release_prepare_.Notify();
  rollout.join();
  EXPECT_EQ(first.outcome(), "committed");
}

TEST_F(PlacementManagerTest, ShutdownAbortsARolloutInFlight) {
  Start();
  StartAgents();
  agents_[0]->agent.hold_prepare_ = true;
  SkewedGroup();
  xpd::v1::RebalanceResponse response;
  std::thread rollout([&] { EXPECT_TRUE(Rebalance(false, &response).ok()); });
  agents_[0]->agent.prepare_entered_.WaitForNotification();
  manager_->Shutdown();
  rollout.join();
  EXPECT_EQ(response.outcome(), "aborted");
  EXPECT_THAT(response.reason(), HasSubstr("rank 0"));
  EXPECT_EQ(agents_[1]->agent.aborts(), 1);
  EXPECT_EQ(agents_[1]->agent.commits(), 0);
}

TEST_F(PlacementManagerTest, AutoModeRollsOutOnItsOwn) {
  absl::Notification rolled_out;
  xpd::v1::RebalanceResponse seen;
  PlacementManagerOptions options = Options();
  options.auto_rebalance = true;
  options.rebalance_interval = absl::Milliseconds(20);
  options.on_rollout = [&](const std::string& group, const xpd::v1::RebalanceResponse& r) {
    if (rolled_out.HasBeenNotified()) return;
    seen = r;
    rolled_out.Notify();
  };
  Start(options);
  SkewedGroup();
  ASSERT_TRUE(rolled_out.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_EQ(seen.outcome(), "committed") << seen.reason();
  EXPECT_EQ(seen.epoch(), 1);
  EXPECT_THAT(seen.reason(), Not(HasSubstr("forced")));
  EXPECT_EQ(agents_[0]->agent.committed_epoch(), 1);
  EXPECT_EQ(agents_[1]->agent.committed_epoch(), 1);
}

TEST_F(PlacementManagerTest, AutoModeLeavesABalancedGroupAlone) {
  PlacementManagerOptions options = Options();
  options.auto_rebalance = true;
  options.rebalance_interval = absl::Milliseconds(10);
  absl::Notification rolled_out;
  options.on_rollout = [&](const std::string&, const xpd::v1::RebalanceResponse&) {
    rolled_out.Notify();
  };
  Start(options);
  ASSERT_TRUE(GetPlacement(Shape(), nullptr).ok());
  StartAgents();
  JoinAgents();
  xpd::v1::ExpertLoad even = SkewedLoad();
  for (int i = 0; i < even.tokens_size(); ++i) even.set_tokens(i, 100);
  ASSERT_TRUE(Heartbeat(Register(0, "127.0.0.1:1"), even).ok());
  // Many passes of the loop; a rollout would have notified.
  EXPECT_FALSE(rolled_out.WaitForNotificationWithTimeout(absl::Milliseconds(300)));
  EXPECT_EQ(agents_[0]->agent.prepares(), 0);
}

TEST_F(PlacementManagerTest, ForcedRebalanceWithoutLoadIsSkipped) {
  Start();
  ASSERT_TRUE(GetPlacement(Shape(), nullptr).ok());
  xpd::v1::RebalanceResponse response;
  ASSERT_TRUE(Rebalance(false, &response).ok());
  EXPECT_EQ(response.outcome(), "skipped");
  EXPECT_THAT(response.reason(), HasSubstr("no load"));
  EXPECT_EQ(Status().last_rebalance().outcome(), "skipped");
}

TEST_F(PlacementManagerTest, UnknownGroupsAreNotFound) {
  Start();
  grpc::ClientContext context;
  xpd::v1::PlacementStatusRequest request;
  xpd::v1::PlacementStatusResponse response;
  grpc::Status status = stub_->PlacementStatus(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  ASSERT_TRUE(GetPlacement(Shape(), nullptr).ok());
  grpc::ClientContext again;
  request.set_ep_group("nope");
  status = stub_->PlacementStatus(&again, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(status.error_message(), HasSubstr("known: 'decode'"));
}

}  // namespace
}  // namespace xpd::controller
