// `xpd status` and `xpd rebalance` as real processes against a real
// xpd-controller process: the JSON they print is a stable interface.
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cli/run_xpd.h"
#include "xpd/v1/cluster.grpc.pb.h"

namespace {

using xpd::testing::ProcessResult;
using xpd::testing::RunXpd;

using ::testing::HasSubstr;
using ::testing::Lt;

constexpr int kStartTimeoutMs = 20'000;

class ControllerCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int out_pipe[2];
    ASSERT_EQ(pipe(out_pipe), 0);
    pid_ = fork();
    ASSERT_GE(pid_, 0);
    if (pid_ == 0) {
      dup2(out_pipe[1], STDOUT_FILENO);
      close(out_pipe[0]);
      close(out_pipe[1]);
      // Ranks registered below never heartbeat: keep them healthy.
      execl(XPD_CONTROLLER_BINARY, XPD_CONTROLLER_BINARY, "--port", "0", "--metrics-port", "0",
            "--heartbeat-interval-ms", "600000", static_cast<char*>(nullptr));
      _exit(127);
    }
    close(out_pipe[1]);
    out_fd_ = out_pipe[0];
    // The ready line: "listening controller=HOST:PORT metrics=HOST:PORT".
    std::string line;
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(kStartTimeoutMs);
    while (line.find('\n') == std::string::npos) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          end - std::chrono::steady_clock::now());
      pollfd pfd{.fd = out_fd_, .events = POLLIN, .revents = 0};
      if (left.count() <= 0 || poll(&pfd, 1, static_cast<int>(left.count())) <= 0) break;
      char buffer[256];
      const ssize_t n = read(out_fd_, buffer, sizeof(buffer));
      if (n <= 0) break;
      line.append(buffer, n);
    }
    const size_t begin = line.find("controller=");
    ASSERT_NE(begin, std::string::npos) << line;
    address_ = line.substr(begin + 11, line.find(' ', begin) - begin - 11);
    stub_ = xpd::v1::Controller::NewStub(
        grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status = 0;
      waitpid(pid_, &status, 0);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    if (out_fd_ >= 0) close(out_fd_);
  }

  // An EP group of 2 ranks x 4 experts x MoE layers {1, 2}, as a rank
  // would create it, with rank 0 (of `address`) reporting a skewed load.
  void SkewedGroup(const std::string& rank0_address, const std::string& rank1_address = "") {
    xpd::v1::GetPlacementRequest placement;
    placement.set_ep_group("decode");
    placement.mutable_shape()->set_num_ranks(2);
    placement.mutable_shape()->set_num_experts(4);
    placement.mutable_shape()->add_moe_layers(1);
    placement.mutable_shape()->add_moe_layers(2);
    placement.mutable_shape()->set_expert_bytes(1000);
    xpd::v1::GetPlacementResponse placed;
    ASSERT_TRUE(Call([&](grpc::ClientContext* c) {
                  return stub_->GetPlacement(c, placement, &placed);
                }).ok());

    std::string rank_id;
    for (const auto& [rank, address] : {std::pair{0, rank0_address}, {1, rank1_address}}) {
      if (address.empty()) continue;
      xpd::v1::RegisterRequest request;
      request.set_role(xpd::v1::ROLE_DECODE);
      request.set_address(address);
      request.set_rank(rank);
      request.set_ep_group("decode");
      xpd::v1::RegisterResponse response;
      ASSERT_TRUE(Call([&](grpc::ClientContext* c) {
                    return stub_->Register(c, request, &response);
                  }).ok());
      if (rank == 0) rank_id = response.rank_id();
    }

    xpd::v1::HeartbeatRequest heartbeat;
    heartbeat.set_rank_id(rank_id);
    xpd::v1::ExpertLoad* load = heartbeat.mutable_expert_load();
    load->set_num_experts(4);
    for (int32_t layer : {1, 2}) {
      load->add_layers(layer);
      for (int64_t tokens : {400, 100, 50, 10}) load->add_tokens(tokens);
    }
    xpd::v1::HeartbeatResponse beat;
    ASSERT_TRUE(
        Call([&](grpc::ClientContext* c) { return stub_->Heartbeat(c, heartbeat, &beat); }).ok());
  }

  template <typename Rpc>
  grpc::Status Call(Rpc rpc) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    return rpc(&context);
  }

  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string address_;
  std::unique_ptr<xpd::v1::Controller::Stub> stub_;
};

TEST_F(ControllerCliTest, StatusJsonWithoutAnEpGroup) {
  const ProcessResult run = RunXpd("status --controller " + address_ + " --format json");
  ASSERT_EQ(run.exit_code, 0);
  const nlohmann::json out = nlohmann::json::parse(run.out);
  EXPECT_EQ(out["controller"], address_);
  EXPECT_TRUE(out["ranks"].empty());
  EXPECT_TRUE(out["ep_group"].is_null());
  EXPECT_TRUE(out["placement"].is_null());
}

TEST_F(ControllerCliTest, StatusJsonShowsRanksPlacementAndBalance) {
  SkewedGroup("127.0.0.1:1");
  const ProcessResult run = RunXpd("status --controller " + address_ + " --format json");
  ASSERT_EQ(run.exit_code, 0);
  // Exactly one JSON document.
  ASSERT_EQ(run.out.find('\n'), run.out.size() - 1) << run.out;
  const nlohmann::json out = nlohmann::json::parse(run.out);
  ASSERT_EQ(out["ranks"].size(), 1u);
  const nlohmann::json& rank = out["ranks"][0];
  EXPECT_EQ(rank["id"], "decode-0");
  EXPECT_EQ(rank["role"], "decode");
  EXPECT_EQ(rank["address"], "127.0.0.1:1");
  EXPECT_EQ(rank["rank"], 0);
  EXPECT_EQ(rank["healthy"], true);
  EXPECT_EQ(rank["ep_group"], "decode");
  EXPECT_EQ(rank["placement_epoch"], 0);
  EXPECT_TRUE(rank.contains("kv_blocks_free"));
  EXPECT_TRUE(rank.contains("running_requests"));

  EXPECT_EQ(out["ep_group"], "decode");
  EXPECT_EQ(out["placement"]["epoch"], 0);
  EXPECT_EQ(out["placement"]["num_ranks"], 2);
  EXPECT_EQ(out["placement"]["num_experts"], 4);
  EXPECT_EQ(out["placement"]["slots_per_layer"], 4);
  EXPECT_EQ(out["placement"]["layers"], nlohmann::json({1, 2}));
  // Rank 0 holds experts 0 and 1: 500 of 560 per layer; the mean is 280.
  EXPECT_NEAR(out["balance"].get<double>(), 500.0 / 280.0, 1e-9);
  ASSERT_EQ(out["layer_balance"].size(), 2u);
  EXPECT_EQ(out["layer_balance"][1]["layer"], 2);
  EXPECT_EQ(out["rank_load"],
            nlohmann::json::parse(R"([{"rank":0,"tokens":1000},{"rank":1,"tokens":120}])"));
  EXPECT_EQ(out["hottest"][0],
            nlohmann::json::parse(R"({"layer":1,"expert":0,"tokens":400,"replicas":1})"));
  EXPECT_EQ(out["window_tokens"], 1120);
  EXPECT_TRUE(out["last_rebalance"].is_null());

  const ProcessResult text = RunXpd("status --controller " + address_);
  ASSERT_EQ(text.exit_code, 0);
  EXPECT_THAT(text.out, HasSubstr("ep_group decode: placement epoch 0, 2 ranks, 4 experts"));
  EXPECT_THAT(text.out, HasSubstr("balance 1.7857"));
}

TEST_F(ControllerCliTest, RebalanceDryRunPrintsThePlan) {
  SkewedGroup("127.0.0.1:1");
  const ProcessResult run =
      RunXpd("rebalance --controller " + address_ + " --dry-run --format json");
  ASSERT_EQ(run.exit_code, 0);
  const nlohmann::json out = nlohmann::json::parse(run.out);
  EXPECT_EQ(out["outcome"], "planned");
  EXPECT_EQ(out["epoch"], 0);
  EXPECT_EQ(out["dry_run"], true);
  EXPECT_NEAR(out["current_balance"].get<double>(), 500.0 / 280.0, 1e-9);
  EXPECT_THAT(out["predicted_balance"].get<double>(), Lt(out["current_balance"].get<double>()));
  EXPECT_GT(out["bytes_to_move"].get<int64_t>(), 0);
  EXPECT_TRUE(out.contains("reason"));
  EXPECT_TRUE(out.contains("duration_seconds"));

  const ProcessResult text = RunXpd("rebalance --controller " + address_ + " --dry-run");
  ASSERT_EQ(text.exit_code, 0);
  EXPECT_THAT(text.out, HasSubstr("planned: epoch 0, balance 1.7857 -> "));
  EXPECT_EQ(text.out.find('\n'), text.out.size() - 1) << text.out;
}

TEST_F(ControllerCliTest, AbortedRolloutExitsNonZero) {
  // Both ranks registered at addresses where nothing serves: Prepare fails.
  SkewedGroup("127.0.0.1:1", "127.0.0.1:2");
  const ProcessResult run = RunXpd("rebalance --controller " + address_ + " --format json");
  EXPECT_EQ(run.exit_code, 1);
  const nlohmann::json out = nlohmann::json::parse(run.out);
  EXPECT_EQ(out["outcome"], "aborted");
  EXPECT_EQ(out["epoch"], 0);
  EXPECT_THAT(out["reason"].get<std::string>(), HasSubstr("Prepare failed on rank 0"));
  EXPECT_THAT(run.err, HasSubstr("xpd rebalance: rollout aborted: "));
}

TEST_F(ControllerCliTest, RefusedRebalanceExitsNonZero) {
  SkewedGroup("127.0.0.1:1");  // rank 1 unknown: nowhere to roll out to
  const ProcessResult run = RunXpd("rebalance --controller " + address_);
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_EQ(run.out, "");
  EXPECT_THAT(run.err, HasSubstr("FAILED_PRECONDITION"));
  EXPECT_THAT(run.err, HasSubstr("rank 1 of 2"));
}

TEST_F(ControllerCliTest, BadAddressFailsWithAClearMessage) {
  for (const char* command : {"status", "rebalance --dry-run"}) {
    const ProcessResult run =
        RunXpd(std::string(command) + " --controller 127.0.0.1:1 --format json --timeout 10");
    EXPECT_EQ(run.exit_code, 1) << command;
    EXPECT_EQ(run.out, "") << command;
    EXPECT_THAT(run.err, HasSubstr("controller 127.0.0.1:1: ")) << command;
    EXPECT_THAT(run.err, HasSubstr("UNAVAILABLE")) << command;
  }
  const ProcessResult usage = RunXpd("status --format json");
  EXPECT_EQ(usage.exit_code, 2);
  EXPECT_THAT(usage.err, HasSubstr("missing --controller"));
}

}  // namespace
