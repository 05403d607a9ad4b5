#include "services/controller/controller_service.h"

#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"

namespace xpd::controller {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using xpd::v1::RankInfo;

class ControllerServiceTest : public ::testing::Test {
 protected:
  ControllerServiceTest()
      : service_({.heartbeat_interval = absl::Seconds(1),
                  .clock = [this] { return now_; },
                  .registry = &registry_,
                  .metric_labels = {{"role", "controller"}, {"rank", "0"}, {"model", "m"}}}) {}

  grpc::Status Register(xpd::v1::Role role, const std::string& address, int rank,
                        std::string* rank_id) {
    xpd::v1::RegisterRequest request;
    request.set_role(role);
    request.set_address(address);
    request.set_rank(rank);
    xpd::v1::RegisterResponse response;
    grpc::Status status = service_.Register(&context_, &request, &response);
    if (status.ok()) {
      EXPECT_EQ(response.heartbeat_interval_ms(), 1000);
      *rank_id = response.rank_id();
    }
    return status;
  }

  grpc::Status Heartbeat(const std::string& rank_id, int64_t free_blocks) {
    xpd::v1::HeartbeatRequest request;
    request.set_rank_id(rank_id);
    request.mutable_load()->set_kv_blocks_free(free_blocks);
    xpd::v1::HeartbeatResponse response;
    return service_.Heartbeat(&context_, &request, &response);
  }

  std::vector<std::string> List(xpd::v1::Role role, bool healthy_only) {
    xpd::v1::ListRanksRequest request;
    request.set_role(role);
    request.set_healthy_only(healthy_only);
    xpd::v1::ListRanksResponse response;
    EXPECT_TRUE(service_.ListRanks(&context_, &request, &response).ok());
    std::vector<std::string> ids;
    for (const RankInfo& rank : response.ranks()) ids.push_back(rank.rank_id());
    return ids;
  }

  std::string Metrics() {
    std::ostringstream out;
    prometheus::TextSerializer().Serialize(out, registry_.Collect());
    return out.str();
  }

  absl::Time now_ = absl::FromUnixSeconds(1'700'000'000);
  prometheus::Registry registry_;
  grpc::ServerContext context_;
  ControllerService service_;
};

TEST_F(ControllerServiceTest, AssignsUniqueIdsPerRole) {
  std::string d0, d1, p0, d0_again, clash;
  ASSERT_TRUE(Register(xpd::v1::ROLE_DECODE, "127.0.0.1:1001", 0, &d0).ok());
  ASSERT_TRUE(Register(xpd::v1::ROLE_DECODE, "127.0.0.1:1002", 1, &d1).ok());
  ASSERT_TRUE(Register(xpd::v1::ROLE_PREFILL, "127.0.0.1:2001", 0, &p0).ok());
  EXPECT_EQ(d0, "decode-0");
  EXPECT_EQ(d1, "decode-1");
  EXPECT_EQ(p0, "prefill-0");
  // Same address again (a restarted rank): same id, no duplicate entry.
  ASSERT_TRUE(Register(xpd::v1::ROLE_DECODE, "127.0.0.1:1001", 0, &d0_again).ok());
  EXPECT_EQ(d0_again, "decode-0");
  // Another address claiming a taken rank number gets a free id.
  ASSERT_TRUE(Register(xpd::v1::ROLE_DECODE, "127.0.0.1:1003", 0, &clash).ok());
  EXPECT_EQ(clash, "decode-2");
  EXPECT_EQ(service_.Ranks().size(), 4u);
  EXPECT_THAT(List(xpd::v1::ROLE_DECODE, false), ElementsAre("decode-0", "decode-1", "decode-2"));
  EXPECT_THAT(List(xpd::v1::ROLE_PREFILL, false), ElementsAre("prefill-0"));
  EXPECT_EQ(List(xpd::v1::ROLE_UNSPECIFIED, false).size(), 4u);
}

TEST_F(ControllerServiceTest, RejectsBadRegistrations) {
  std::string id;
  grpc::Status status = Register(xpd::v1::ROLE_UNSPECIFIED, "127.0.0.1:1", 0, &id);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("role"));
  status = Register(xpd::v1::ROLE_DECODE, "", 0, &id);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("address"));
  status = Register(xpd::v1::ROLE_DECODE, "127.0.0.1:1", -1, &id);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("rank"));
}

TEST_F(ControllerServiceTest, HeartbeatUpdatesLoadAndUnknownIdIsNotFound) {
  std::string id;
  ASSERT_TRUE(Register(xpd::v1::ROLE_DECODE, "127.0.0.1:1001", 0, &id).ok());
  now_ += absl::Milliseconds(700);
  ASSERT_TRUE(Heartbeat(id, 42).ok());
  std::vector<RankInfo> ranks = service_.Ranks();
  ASSERT_EQ(ranks.size(), 1u);
  EXPECT_EQ(ranks[0].load().kv_blocks_free(), 42);
  EXPECT_EQ(ranks[0].last_heartbeat_unix_ms(), absl::ToUnixMillis(now_));
  EXPECT_TRUE(ranks[0].healthy());
  EXPECT_EQ(ranks[0].address(), "127.0.0.1:1001");
  EXPECT_EQ(ranks[0].role(), xpd::v1::ROLE_DECODE);

  const grpc::Status status = Heartbeat("decode-9", 1);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(status.error_message(), HasSubstr("decode-9"));
  EXPECT_THAT(Metrics(), HasSubstr("xpd_controller_heartbeats_total{model=\"m\",rank=\"0\","
                                   "role=\"controller\"} 1"));
}

TEST_F(ControllerServiceTest, SilentRankIsMarkedDownAndRecovers) {
  std::string quiet, chatty;
  ASSERT_TRUE(Register(xpd::v1::ROLE_DECODE, "127.0.0.1:1001", 0, &quiet).ok());
  ASSERT_TRUE(Register(xpd::v1::ROLE_DECODE, "127.0.0.1:1002", 1, &chatty).ok());
  // down_after defaults to 3 x interval = 3 s.
  now_ += absl::Seconds(2);
  ASSERT_TRUE(Heartbeat(chatty, 1).ok());
  now_ += absl::Seconds(1);  // quiet: exactly 3 s, still healthy
  EXPECT_THAT(List(xpd::v1::ROLE_DECODE, true), ElementsAre("decode-0", "decode-1"));
  now_ += absl::Milliseconds(1);
  EXPECT_THAT(List(xpd::v1::ROLE_DECODE, true), ElementsAre("decode-1"));
  EXPECT_THAT(List(xpd::v1::ROLE_DECODE, false), ElementsAre("decode-0", "decode-1"));
  EXPECT_FALSE(service_.Ranks()[0].healthy());

  service_.RefreshMetrics();
  std::string metrics = Metrics();
  EXPECT_THAT(
      metrics,
      HasSubstr(
          R"(xpd_ranks{model="m",rank="0",role="controller",rank_role="decode",state="down"} 1)"));
  EXPECT_THAT(
      metrics,
      HasSubstr(
          R"(xpd_ranks{model="m",rank="0",role="controller",rank_role="decode",state="healthy"} 1)"));
  EXPECT_THAT(
      metrics,
      HasSubstr(
          R"(xpd_ranks{model="m",rank="0",role="controller",rank_role="prefill",state="healthy"} 0)"));

  ASSERT_TRUE(Heartbeat(quiet, 5).ok());
  EXPECT_THAT(List(xpd::v1::ROLE_DECODE, true), ElementsAre("decode-0", "decode-1"));
  EXPECT_THAT(
      Metrics(),
      HasSubstr(
          R"(xpd_ranks{model="m",rank="0",role="controller",rank_role="decode",state="healthy"} 2)"));
}

TEST(ControllerServiceOptionsTest, ExplicitDownAfterAndNoRegistry) {
  absl::Time now = absl::FromUnixSeconds(100);
  ControllerService service({.heartbeat_interval = absl::Seconds(1),
                             .down_after = absl::Seconds(10),
                             .clock = [&now] { return now; }});
  grpc::ServerContext context;
  xpd::v1::RegisterRequest request;
  request.set_role(xpd::v1::ROLE_PREFILL);
  request.set_address("127.0.0.1:5");
  xpd::v1::RegisterResponse response;
  ASSERT_TRUE(service.Register(&context, &request, &response).ok());
  now += absl::Seconds(9);
  EXPECT_TRUE(service.Ranks()[0].healthy());
  now += absl::Seconds(2);
  EXPECT_FALSE(service.Ranks()[0].healthy());
  service.RefreshMetrics();  // no registry: a no-op
}

}  // namespace
}  // namespace xpd::controller
