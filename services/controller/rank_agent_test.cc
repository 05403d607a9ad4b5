// common/cluster's RankAgent against the real controller service, in-process
// over loopback gRPC (here because common/ never includes services/).
#include "common/cluster/rank_agent.h"

#include <atomic>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/rpc/grpc_server.h"
#include "gtest/gtest.h"
#include "services/controller/controller_service.h"

namespace xpd::controller {
namespace {

constexpr absl::Duration kWaitLimit = absl::Seconds(20);

// The controller, plus a way to wait for what it has seen.
class ObservedController : public ControllerService {
 public:
  grpc::Status Register(grpc::ServerContext* context, const xpd::v1::RegisterRequest* request,
                        xpd::v1::RegisterResponse* response) override {
    grpc::Status status = ControllerService::Register(context, request, response);
    absl::MutexLock lock(&mu_);
    ++registrations_;
    return status;
  }
  grpc::Status Heartbeat(grpc::ServerContext* context, const xpd::v1::HeartbeatRequest* request,
                         xpd::v1::HeartbeatResponse* response) override {
    grpc::Status status = ControllerService::Heartbeat(context, request, response);
    absl::MutexLock lock(&mu_);
    if (status.ok()) last_free_blocks_ = request->load().kv_blocks_free();
    return status;
  }
  bool WaitForRegistrations(int n) {
    absl::MutexLock lock(&mu_);
    auto done = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return registrations_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&done), kWaitLimit);
  }
  bool WaitForHeartbeatWithFreeBlocks(int64_t free_blocks) {
    absl::MutexLock lock(&mu_);
    auto done = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return last_free_blocks_ == free_blocks; };
    return mu_.AwaitWithTimeout(absl::Condition(&done), kWaitLimit);
  }

 private:
  absl::Mutex mu_;
  int registrations_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t last_free_blocks_ ABSL_GUARDED_BY(mu_) = -1;
};

xpd::v1::ListRanksResponse ListRanks(const std::string& address) {
  auto stub = xpd::v1::Controller::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  xpd::v1::ListRanksRequest request;
  request.set_role(xpd::v1::ROLE_DECODE);
  request.set_healthy_only(true);
  xpd::v1::ListRanksResponse response;
  EXPECT_TRUE(stub->ListRanks(&context, request, &response).ok());
  return response;
}

int PortOf(const std::string& address) { return std::stoi(address.substr(address.rfind(':') + 1)); }

TEST(RankAgentTest, RegistersReportsLoadAndReregistersAfterControllerRestart) {
  auto controller = std::make_unique<ObservedController>();
  auto server = rpc::GrpcServer::Start({.services = {controller.get()}});
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string address = (*server)->address();

  std::atomic<int64_t> free_blocks{10};
  cluster::RankAgent agent({.controller_address = address,
                            .role = xpd::v1::ROLE_DECODE,
                            .address = "127.0.0.1:7777",
                            .rank = 3,
                            .load =
                                [&free_blocks] {
                                  xpd::v1::RankLoad load;
                                  load.set_kv_blocks_total(100);
                                  load.set_kv_blocks_free(free_blocks.load());
                                  return load;
                                },
                            .interval = absl::Milliseconds(20)});
  EXPECT_EQ(agent.rank_id(), "");
  agent.Start();
  ASSERT_TRUE(controller->WaitForRegistrations(1));
  // A heartbeat only follows a completed registration.
  ASSERT_TRUE(controller->WaitForHeartbeatWithFreeBlocks(10));
  EXPECT_EQ(agent.rank_id(), "decode-3");

  free_blocks = 7;
  ASSERT_TRUE(controller->WaitForHeartbeatWithFreeBlocks(7));
  xpd::v1::ListRanksResponse ranks = ListRanks(address);
  ASSERT_EQ(ranks.ranks_size(), 1);
  EXPECT_EQ(ranks.ranks(0).rank_id(), "decode-3");
  EXPECT_EQ(ranks.ranks(0).address(), "127.0.0.1:7777");
  EXPECT_EQ(ranks.ranks(0).load().kv_blocks_total(), 100);
  EXPECT_EQ(ranks.ranks(0).load().kv_blocks_free(), 7);
  EXPECT_TRUE(ranks.ranks(0).healthy());

  // Restart the controller on the same port: it has forgotten the rank, the
  // agent's heartbeat gets NOT_FOUND and it registers again.
  (*server)->Shutdown();
  controller = std::make_unique<ObservedController>();
  auto restarted =
      rpc::GrpcServer::Start({.port = PortOf(address), .services = {controller.get()}});
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  free_blocks = 5;
  ASSERT_TRUE(controller->WaitForRegistrations(1));
  ASSERT_TRUE(controller->WaitForHeartbeatWithFreeBlocks(5));
  EXPECT_EQ(agent.rank_id(), "decode-3");
  ranks = ListRanks(address);
  ASSERT_EQ(ranks.ranks_size(), 1);
  EXPECT_EQ(ranks.ranks(0).load().kv_blocks_free(), 5);
}

TEST(RankAgentTest, UnreachableControllerNeverBlocksTheCaller) {
  // A port nobody listens on: start a server, note its port, stop it.
  std::string address;
  {
    auto server = rpc::GrpcServer::Start({});
    ASSERT_TRUE(server.ok()) << server.status();
    address = (*server)->address();
  }
  cluster::RankAgent agent({.controller_address = address,
                            .role = xpd::v1::ROLE_PREFILL,
                            .address = "127.0.0.1:1",
                            .interval = absl::Hours(1)});
  agent.Start();
  agent.Start();  // idempotent
  EXPECT_EQ(agent.rank_id(), "");
  // The destructor stops the thread even mid-wait on a one-hour interval.
}

TEST(RankAgentTest, NeverStartedAgentDestructs) {
  cluster::RankAgent agent({.controller_address = "127.0.0.1:1"});
  EXPECT_EQ(agent.rank_id(), "");
}

}  // namespace
}  // namespace xpd::controller
