#include "common/transport/grpc_ep_transport.h"

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/rpc/grpc_server.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace xpd::transport {
namespace {

using ::testing::HasSubstr;
using xpd::v1::ExpertMessage;

absl::Time Soon() { return absl::Now() + absl::Seconds(20); }

ExpertMessage Header(int64_t step) {
  ExpertMessage message;
  message.set_step(step);
  message.set_layer(-1);
  message.mutable_header()->set_has_work(true);
  return message;
}

ExpertMessage Dispatch(int64_t step, int32_t layer, std::string rows) {
  ExpertMessage message;
  message.set_step(step);
  message.set_layer(layer);
  message.mutable_dispatch()->set_hidden(1);
  *message.mutable_dispatch()->mutable_rows() = std::move(rows);
  return message;
}

ExpertMessage Combine(int64_t step, int32_t layer, std::string outputs) {
  ExpertMessage message;
  message.set_step(step);
  message.set_layer(layer);
  *message.mutable_combine()->mutable_outputs() = std::move(outputs);
  return message;
}

// Says which link and key a payload was sent for, so a misfiled message shows.
std::string Tag(int32_t from, int32_t to, int64_t step, int32_t layer) {
  return absl::StrCat(from, "->", to, " step ", step, " layer ", layer);
}

// `size` ranks, each a GrpcEpTransport on its own real gRPC server on
// 127.0.0.1; shut down in the documented order.
class Group {
 public:
  explicit Group(int32_t size, GrpcEpTransportOptions options = {}, std::string name = "moe") {
    for (int32_t r = 0; r < size; ++r) {
      transports_.push_back(std::make_unique<GrpcEpTransport>(name, r, size, options));
    }
  }
  ~Group() {
    for (auto& transport : transports_) transport->Shutdown();
    for (auto& server : servers_) server->Shutdown();
  }

  absl::Status StartServers() {
    for (auto& transport : transports_) {
      absl::StatusOr<std::unique_ptr<rpc::GrpcServer>> server =
          rpc::GrpcServer::Start({.services = {transport->service()}});
      if (!server.ok()) return server.status();
      addresses_.push_back((*server)->address());
      servers_.push_back(*std::move(server));
    }
    return absl::OkStatus();
  }
  // Connect returns once the peers accepted, so ranks may connect in turn.
  absl::Status Start() {
    if (absl::Status status = StartServers(); !status.ok()) return status;
    for (auto& transport : transports_) {
      if (absl::Status status = transport->Connect(addresses_, Soon()); !status.ok()) {
        return status;
      }
    }
    return absl::OkStatus();
  }

  GrpcEpTransport& operator[](int32_t r) { return *transports_[r]; }
  const std::vector<std::string>& addresses() const { return addresses_; }
  int32_t size() const { return static_cast<int32_t>(transports_.size()); }

 private:
  std::vector<std::unique_ptr<GrpcEpTransport>> transports_;
  std::vector<std::unique_ptr<rpc::GrpcServer>> servers_;
  std::vector<std::string> addresses_;
};

class AllToAllTest : public ::testing::TestWithParam<int32_t> {};

// Every rank, on its own thread, sends every peer headers, dispatches and
// combines for several steps and layers, then takes them back in reverse key
// order. The last message from each peer is awaited first; once it is there
// every earlier one must be too (deadline in the past), which is what
// per-peer ordering promises.
TEST_P(AllToAllTest, ExchangesInOrderAndByKey) {
  const int32_t size = GetParam();
  constexpr int64_t kSteps = 4;
  constexpr int32_t kLayers = 3;
  Group group(size);
  ASSERT_TRUE(group.Start().ok());

  std::vector<std::thread> threads;
  for (int32_t r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      GrpcEpTransport& me = group[r];
      for (int64_t step = 0; step < kSteps; ++step) {
        for (int32_t peer = 0; peer < size; ++peer) {
          if (peer == r) continue;
          EXPECT_TRUE(me.Send(peer, Header(step)).ok());
          for (int32_t layer = 0; layer < kLayers; ++layer) {
            EXPECT_TRUE(me.Send(peer, Dispatch(step, layer, Tag(r, peer, step, layer))).ok());
            EXPECT_TRUE(me.Send(peer, Combine(step, layer, Tag(r, peer, step, layer))).ok());
          }
        }
      }
      for (int32_t peer = 0; peer < size; ++peer) {
        if (peer == r) continue;
        const int64_t last_step = kSteps - 1;
        const int32_t last_layer = kLayers - 1;
        absl::StatusOr<ExpertMessage> last =
            me.Receive(peer, last_step, last_layer, EpMessageKind::kCombine, Soon());
        ASSERT_TRUE(last.ok()) << last.status();
        EXPECT_EQ(last->combine().outputs(), Tag(peer, r, last_step, last_layer));
        EXPECT_TRUE(me.HasHeader(0));
        for (int64_t step = last_step; step >= 0; --step) {
          for (int32_t layer = last_layer; layer >= 0; --layer) {
            if (step != last_step || layer != last_layer) {
              absl::StatusOr<ExpertMessage> combine =
                  me.Receive(peer, step, layer, EpMessageKind::kCombine, absl::InfinitePast());
              ASSERT_TRUE(combine.ok()) << combine.status();
              EXPECT_EQ(combine->combine().outputs(), Tag(peer, r, step, layer));
            }
            absl::StatusOr<ExpertMessage> dispatch =
                me.Receive(peer, step, layer, EpMessageKind::kDispatch, absl::InfinitePast());
            ASSERT_TRUE(dispatch.ok()) << dispatch.status();
            EXPECT_EQ(dispatch->from_rank(), peer);
            EXPECT_EQ(dispatch->dispatch().rows(), Tag(peer, r, step, layer));
          }
          absl::StatusOr<ExpertMessage> header =
              me.Receive(peer, step, -1, EpMessageKind::kHeader, absl::InfinitePast());
          ASSERT_TRUE(header.ok()) << header.status();
          EXPECT_TRUE(header->header().has_work());
        }
      }
      EXPECT_FALSE(me.HasHeader(0));  // all taken
    });
  }
  for (std::thread& thread : threads) thread.join();
}

INSTANTIATE_TEST_SUITE_P(Ranks, AllToAllTest, ::testing::Values(2, 4));

TEST(GrpcEpTransportTest, RefusesAHelloFromAnotherGroupOrSize) {
  Group group(2);
  ASSERT_TRUE(group.StartServers().ok());
  const std::vector<std::string>& addresses = group.addresses();

  GrpcEpTransport other_group("other", 1, 2);
  absl::Status status = other_group.Connect(addresses, Soon());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(status.message(), HasSubstr("ep_group: 'other'"));
  EXPECT_THAT(status.message(), HasSubstr(addresses[0]));

  GrpcEpTransport other_size("moe", 1, 3);
  status = other_size.Connect({addresses[0], addresses[1], addresses[0]}, Soon());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(status.message(), HasSubstr("group_size: 3"));
  other_group.Shutdown();
  other_size.Shutdown();

  // The refused streams did not count as rank 1: the real one still joins.
  for (int32_t r = 0; r < 2; ++r) ASSERT_TRUE(group[r].Connect(addresses, Soon()).ok());
  ASSERT_TRUE(group[1].Send(0, Header(3)).ok());
  EXPECT_TRUE(group[0].Receive(1, 3, -1, EpMessageKind::kHeader, Soon()).ok());
}

TEST(GrpcEpTransportTest, RefusesStreamsThatDoNotStartWithAValidHello) {
  Group group(2);
  ASSERT_TRUE(group.StartServers().ok());
  auto stub = xpd::v1::ExpertExchange::NewStub(
      grpc::CreateChannel(group.addresses()[0], grpc::InsecureChannelCredentials()));
  const auto exchange = [&](const ExpertMessage& first) {
    grpc::ClientContext context;
    xpd::v1::ExchangeClosed closed;
    auto writer = stub->Exchange(&context, &closed);
    writer->Write(first);
    writer->WritesDone();
    return writer->Finish();
  };
  grpc::Status status = exchange(Header(0));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("must be a hello"));

  ExpertMessage hello;
  hello.mutable_hello()->set_ep_group("moe");
  hello.mutable_hello()->set_group_size(2);
  hello.set_from_rank(0);  // the receiver's own rank
  status = exchange(hello);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("from_rank: 0"));
}

TEST(GrpcEpTransportTest, RefusesAddressesOutOfRankOrder) {
  Group group(3);
  ASSERT_TRUE(group.StartServers().ok());
  const std::vector<std::string>& a = group.addresses();
  const absl::Status status = group[0].Connect({a[0], a[2], a[1]}, Soon());
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(status.message(), HasSubstr("serves expert-parallel rank 2, not rank 1"));
}

TEST(GrpcEpTransportTest, SecondStreamFromOneRankIsRefused) {
  Group group(2);
  ASSERT_TRUE(group.Start().ok());
  GrpcEpTransport again("moe", 1, 2);
  const absl::Status status = again.Connect(group.addresses(), Soon());
  EXPECT_EQ(status.code(), absl::StatusCode::kAlreadyExists) << status;
  // The first stream is untouched.
  ASSERT_TRUE(group[1].Send(0, Header(0)).ok());
  EXPECT_TRUE(group[0].Receive(1, 0, -1, EpMessageKind::kHeader, Soon()).ok());
}

TEST(GrpcEpTransportTest, PeerShutdownFailsAWaitingReceiveAtOnce) {
  Group group(2);
  ASSERT_TRUE(group.Start().ok());
  const absl::Time start = absl::Now();
  absl::StatusOr<ExpertMessage> received;
  std::thread receiver([&] {
    received = group[0].Receive(1, 5, 0, EpMessageKind::kDispatch, start + absl::Seconds(60));
  });
  group[1].Shutdown();
  receiver.join();
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));  // not the 60 s deadline
  EXPECT_EQ(received.status().code(), absl::StatusCode::kUnavailable) << received.status();
  // A clean end: rank 1 closed its stream before going.
  EXPECT_EQ(received.status().message(),
            absl::StrCat("expert-parallel rank 1 (", group.addresses()[1], ") disconnected"));

  // Rank 1 ended rank 0's stream to it too; Sends fail once that reaches rank
  // 0 (a Write may still be accepted before the reset arrives).
  absl::Status sent;
  for (int64_t step = 0; sent.ok() && step < 100000; ++step) sent = group[0].Send(1, Header(step));
  EXPECT_EQ(sent.code(), absl::StatusCode::kUnavailable) << sent;
  EXPECT_THAT(sent.message(), HasSubstr("rank 1 at " + group.addresses()[1]));
  // And the failure sticks.
  EXPECT_EQ(group[0].Send(1, Header(0)).code(), absl::StatusCode::kUnavailable);
}

TEST(GrpcEpTransportTest, OwnShutdownFailsReceiveAndSend) {
  Group group(2);
  ASSERT_TRUE(group.Start().ok());
  group[0].Shutdown();
  const absl::StatusOr<ExpertMessage> received =
      group[0].Receive(1, 0, -1, EpMessageKind::kHeader, Soon());
  EXPECT_EQ(received.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(received.status().message(), HasSubstr("this rank"));
  EXPECT_EQ(group[0].Send(1, Header(0)).code(), absl::StatusCode::kUnavailable);
  group[0].Shutdown();  // idempotent
}

TEST(GrpcEpTransportTest, ReceiveTimesOutNamingThePeer) {
  Group group(2);
  ASSERT_TRUE(group.Start().ok());
  const absl::StatusOr<ExpertMessage> received =
      group[0].Receive(1, 7, 3, EpMessageKind::kDispatch, absl::Now() + absl::Milliseconds(50));
  EXPECT_EQ(received.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(received.status().message(), HasSubstr("rank 1"));
}

TEST(GrpcEpTransportTest, LargeMessagesPass) {
  Group group(2);
  ASSERT_TRUE(group.Start().ok());
  std::string rows(32 << 20, '\0');
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<char>(i * 131 % 251);
  std::thread sender([&] { EXPECT_TRUE(group[0].Send(1, Dispatch(0, 0, rows)).ok()); });
  ASSERT_TRUE(group[1].Send(0, Combine(0, 0, rows)).ok());
  sender.join();
  absl::StatusOr<ExpertMessage> dispatch =
      group[1].Receive(0, 0, 0, EpMessageKind::kDispatch, Soon());
  absl::StatusOr<ExpertMessage> combine =
      group[0].Receive(1, 0, 0, EpMessageKind::kCombine, Soon());
  ASSERT_TRUE(dispatch.ok()) << dispatch.status();
  ASSERT_TRUE(combine.ok()) << combine.status();
  EXPECT_TRUE(dispatch->dispatch().rows() == rows);  // not EXPECT_EQ: 32 MiB diffs
  EXPECT_TRUE(combine->combine().outputs() == rows);
}

TEST(GrpcEpTransportTest, OversizedMessageIsRefusedAndTheLinkStaysUp) {
  Group group(2, {.max_message_bytes = 1 << 20});
  ASSERT_TRUE(group.Start().ok());
  const absl::Status status = group[0].Send(1, Dispatch(0, 0, std::string(2 << 20, 'x')));
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_THAT(status.message(), HasSubstr("rank 1"));
  ASSERT_TRUE(group[0].Send(1, Dispatch(0, 0, "fits")).ok());
  EXPECT_TRUE(group[1].Receive(0, 0, 0, EpMessageKind::kDispatch, Soon()).ok());
}

TEST(GrpcEpTransportTest, ConnectFailsForAnUnreachablePeerByTheDeadline) {
  std::string gone;
  {
    absl::StatusOr<std::unique_ptr<rpc::GrpcServer>> server = rpc::GrpcServer::Start({});
    ASSERT_TRUE(server.ok());
    gone = (*server)->address();
  }  // nothing listens there now
  Group group(2);
  ASSERT_TRUE(group.StartServers().ok());
  const absl::Time start = absl::Now();
  const absl::Status status =
      group[0].Connect({group.addresses()[0], gone}, start + absl::Milliseconds(300));
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(status.message(), HasSubstr("rank 1 at " + gone));
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_EQ(group[0].Send(1, Header(0)).code(), absl::StatusCode::kUnavailable);
}

TEST(GrpcEpTransportTest, SendBeforeConnectAndBadPeers) {
  GrpcEpTransport transport("moe", 0, 2);
  EXPECT_EQ(transport.Send(1, Header(0)).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(transport.Send(0, Header(0)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(transport.Send(2, Header(0)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(transport.Receive(0, 0, -1, EpMessageKind::kHeader, Soon()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace xpd::transport
