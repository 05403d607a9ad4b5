#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/rpc/grpc_server.h"
#include "common/transport/grpc_kv_transport.h"
#include "common/transport/in_process_kv_transport.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace xpd::transport {
namespace {

using ::testing::HasSubstr;

// Records every chunk; can fail at a given token or on completion, or hold
// WriteKv until released.
class FakeSink : public KvSink {
 public:
  struct Chunk {
    std::string request_id;
    int64_t first_token, count;
    int32_t num_layers, latent_dim;
    std::vector<float> rows;
  };

  absl::Status WriteKv(const std::string& request_id, int64_t first_token, int64_t count,
                       int32_t num_layers, int32_t latent_dim,
                       std::span<const float> rows) override {
    absl::MutexLock lock(&mu_);
    if (hold_) {
      mu_.AwaitWithTimeout(absl::Condition(
                               +[](bool* hold) { return !*hold; }, &hold_),
                           absl::Seconds(20));
    }
    if (fail_at_token_ >= 0 && first_token + count > fail_at_token_) {
      return absl::NotFoundError("no reservation for " + request_id);
    }
    chunks_.push_back({request_id, first_token, count, num_layers, latent_dim,
                       std::vector<float>(rows.begin(), rows.end())});
    return absl::OkStatus();
  }
  absl::Status CompleteKv(const std::string& request_id, int64_t num_tokens) override {
    absl::MutexLock lock(&mu_);
    if (fail_complete_) return absl::InvalidArgumentError("shape mismatch for " + request_id);
    completed_.push_back(num_tokens);
    return absl::OkStatus();
  }

  void FailAtToken(int64_t token) {
    absl::MutexLock lock(&mu_);
    fail_at_token_ = token;
  }
  void FailComplete() {
    absl::MutexLock lock(&mu_);
    fail_complete_ = true;
  }
  void Hold() {
    absl::MutexLock lock(&mu_);
    hold_ = true;
  }
  void Release() {
    absl::MutexLock lock(&mu_);
    hold_ = false;
  }
  std::vector<Chunk> chunks() {
    absl::MutexLock lock(&mu_);
    return chunks_;
  }
  std::vector<int64_t> completed() {
    absl::MutexLock lock(&mu_);
    return completed_;
  }

 private:
  absl::Mutex mu_;
  std::vector<Chunk> chunks_ ABSL_GUARDED_BY(mu_);
  std::vector<int64_t> completed_ ABSL_GUARDED_BY(mu_);
  int64_t fail_at_token_ ABSL_GUARDED_BY(mu_) = -1;
  bool fail_complete_ ABSL_GUARDED_BY(mu_) = false;
  bool hold_ ABSL_GUARDED_BY(mu_) = false;
};

struct Payload {
  Payload(int32_t layers, int64_t tokens, int32_t dim) : data(int64_t{layers} * tokens * dim) {
    std::iota(data.begin(), data.end(), 0.5f);
    view = {.num_layers = layers, .latent_dim = dim, .num_tokens = tokens, .data = data};
  }
  std::vector<float> data;
  KvPayload view;
};

// Rebuilds [layers][tokens][dim] from the recorded chunks, checking they
// arrived contiguous and in order.
std::vector<float> Reassemble(const std::vector<FakeSink::Chunk>& chunks, const KvPayload& shape) {
  std::vector<float> out(shape.data.size(), -1.0f);
  int64_t next = 0;
  for (const FakeSink::Chunk& chunk : chunks) {
    EXPECT_EQ(chunk.request_id, "req-1");
    EXPECT_EQ(chunk.first_token, next);
    EXPECT_EQ(chunk.num_layers, shape.num_layers);
    EXPECT_EQ(chunk.latent_dim, shape.latent_dim);
    EXPECT_EQ(chunk.rows.size(), size_t(chunk.count * shape.num_layers * shape.latent_dim));
    for (int64_t l = 0; l < shape.num_layers; ++l) {
      for (int64_t t = 0; t < chunk.count; ++t) {
        for (int64_t d = 0; d < shape.latent_dim; ++d) {
          out[(l * shape.num_tokens + chunk.first_token + t) * shape.latent_dim + d] =
              chunk.rows[(l * chunk.count + t) * shape.latent_dim + d];
        }
      }
    }
    next += chunk.count;
  }
  EXPECT_EQ(next, shape.num_tokens);
  return out;
}

// One transport + one receiving sink at `address`, in-process or over gRPC.
class KvTransportTest : public ::testing::TestWithParam<bool> {
 protected:
  bool grpc() const { return GetParam(); }

  void SetUp() override { Start(/*chunk_bytes=*/kDefaultKvChunkBytes); }

  void Start(int64_t chunk_bytes) {
    if (grpc()) {
      if (server_ == nullptr) {
        service_ = std::make_unique<KvTransferService>(&sink_);
        auto server = rpc::GrpcServer::Start({.services = {service_.get()}});
        ASSERT_TRUE(server.ok()) << server.status();
        server_ = std::move(*server);
      }
      address_ = server_->address();
      transport_ = std::make_unique<GrpcKvTransport>(GrpcKvTransportOptions{chunk_bytes});
    } else {
      address_ = "decode-0";
      auto in_process = std::make_unique<InProcessKvTransport>(chunk_bytes);
      in_process->Register(address_, &sink_);
      transport_ = std::move(in_process);
    }
  }

  absl::StatusOr<int64_t> Send(const KvPayload& payload,
                               absl::Duration timeout = absl::Seconds(20)) {
    return transport_->Send(address_, "req-1", payload, absl::Now() + timeout);
  }

  FakeSink sink_;
  std::unique_ptr<KvTransferService> service_;
  std::unique_ptr<rpc::GrpcServer> server_;
  std::unique_ptr<KvTransport> transport_;
  std::string address_;
};

TEST_P(KvTransportTest, DeliversRowsIntactInOrderWhenChunksDoNotDivide) {
  Payload payload(3, 37, 5);   // 60 bytes a token
  Start(/*chunk_bytes=*/430);  // 7 tokens a chunk: 5 full chunks + 2 tokens
  auto bytes = Send(payload.view);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, int64_t(payload.data.size() * sizeof(float)));
  const auto chunks = sink_.chunks();
  ASSERT_EQ(chunks.size(), 6u);
  EXPECT_EQ(chunks.front().count, 7);
  EXPECT_EQ(chunks.back().count, 2);
  EXPECT_EQ(Reassemble(chunks, payload.view), payload.data);
  EXPECT_EQ(sink_.completed(), std::vector<int64_t>{37});
}

TEST_P(KvTransportTest, DefaultChunkSizeIsAboutOneMebibyteOfWholeTokens) {
  Payload payload(4, 300, 576);  // 9216 bytes a token: 113 tokens a chunk
  auto bytes = Send(payload.view);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  const auto chunks = sink_.chunks();
  ASSERT_EQ(chunks.size(), 3u);
  EXPECT_EQ(chunks[0].count, 113);
  EXPECT_EQ(chunks[2].count, 300 - 2 * 113);
  EXPECT_EQ(Reassemble(chunks, payload.view), payload.data);
}

TEST_P(KvTransportTest, ChunkSmallerThanATokenStillSendsWholeTokens) {
  Payload payload(2, 5, 3);
  Start(/*chunk_bytes=*/1);
  ASSERT_TRUE(Send(payload.view).ok());
  const auto chunks = sink_.chunks();
  ASSERT_EQ(chunks.size(), 5u);
  EXPECT_EQ(Reassemble(chunks, payload.view), payload.data);
}

TEST_P(KvTransportTest, EmptyTransferCompletes) {
  Payload payload(2, 0, 3);
  auto bytes = Send(payload.view);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, 0);
  EXPECT_TRUE(sink_.chunks().empty());
  EXPECT_EQ(sink_.completed(), std::vector<int64_t>{0});
}

TEST_P(KvTransportTest, SinkWriteErrorKeepsItsCode) {
  Payload payload(3, 37, 5);
  Start(/*chunk_bytes=*/430);
  sink_.FailAtToken(10);  // the second chunk
  auto bytes = Send(payload.view);
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kNotFound) << bytes.status();
  EXPECT_THAT(bytes.status().message(), HasSubstr("no reservation for req-1"));
  EXPECT_THAT(bytes.status().message(), HasSubstr(address_));
  EXPECT_TRUE(sink_.completed().empty());
}

TEST_P(KvTransportTest, SinkCompleteErrorKeepsItsCode) {
  Payload payload(1, 4, 2);
  sink_.FailComplete();
  EXPECT_EQ(Send(payload.view).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(KvTransportTest, MalformedPayloadIsInvalidArgument) {
  Payload payload(3, 4, 5);
  KvPayload bad = payload.view;
  bad.num_tokens = 5;  // disagrees with the data size
  auto bytes = Send(bad);
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bytes.status().message(), HasSubstr("data"));
  bad = payload.view;
  bad.num_layers = 0;
  EXPECT_THAT(Send(bad).status().message(), HasSubstr("num_layers"));
  EXPECT_EQ(transport_->Send(address_, "", payload.view, absl::InfiniteFuture()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_P(KvTransportTest, UnreachableAddressIsUnavailableNamingIt) {
  std::string gone = "decode-9";
  if (grpc()) {  // a port nobody listens on any more
    auto server = rpc::GrpcServer::Start({});
    ASSERT_TRUE(server.ok()) << server.status();
    gone = (*server)->address();
  }
  Payload payload(1, 3, 2);
  auto bytes = transport_->Send(gone, "req-1", payload.view, absl::Now() + absl::Seconds(20));
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kUnavailable) << bytes.status();
  EXPECT_THAT(bytes.status().message(), HasSubstr(gone));
}

TEST_P(KvTransportTest, PastDeadlineIsDeadlineExceeded) {
  Payload payload(1, 3, 2);
  auto bytes = transport_->Send(address_, "req-1", payload.view, absl::Now() - absl::Seconds(1));
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kDeadlineExceeded) << bytes.status();
}

INSTANTIATE_TEST_SUITE_P(Transports, KvTransportTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Grpc" : "InProcess"; });

TEST(GrpcKvTransportTest, SlowReceiverHitsTheDeadline) {
  FakeSink sink;
  KvTransferService service(&sink);
  auto server = rpc::GrpcServer::Start({.services = {&service}});
  ASSERT_TRUE(server.ok()) << server.status();
  sink.Hold();
  GrpcKvTransport transport;
  Payload payload(1, 3, 2);
  auto bytes = transport.Send((*server)->address(), "req-1", payload.view,
                              absl::Now() + absl::Milliseconds(200));
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kDeadlineExceeded) << bytes.status();
  EXPECT_THAT(bytes.status().message(), HasSubstr((*server)->address()));
  sink.Release();
}

// Streams written by hand, as a buggy or hostile sender would.
class KvTransferServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = rpc::GrpcServer::Start({.services = {&service_}});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    stub_ = xpd::v1::KvTransfer::NewStub(
        grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  }

  grpc::Status Push(const std::vector<xpd::v1::KvChunk>& chunks) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    xpd::v1::KvAck ack;
    auto writer = stub_->PushKv(&context, &ack);
    for (const auto& chunk : chunks) {
      if (!writer->Write(chunk)) break;
    }
    writer->WritesDone();
    return writer->Finish();
  }

  static xpd::v1::KvChunk Chunk(int first, int count, bool header = false) {
    xpd::v1::KvChunk chunk;
    if (header) {
      chunk.set_request_id("req-1");
      chunk.set_num_tokens(4);
      chunk.set_num_layers(1);
      chunk.set_latent_dim(2);
    }
    chunk.set_first_token(first);
    chunk.set_token_count(count);
    chunk.set_data(std::string(count * 2 * sizeof(float), '\0'));
    return chunk;
  }

  FakeSink sink_;
  KvTransferService service_{&sink_};
  std::unique_ptr<rpc::GrpcServer> server_;
  std::unique_ptr<xpd::v1::KvTransfer::Stub> stub_;
};

TEST_F(KvTransferServiceTest, AcceptsWellFormedStream) {
  EXPECT_TRUE(Push({Chunk(0, 2, true), Chunk(2, 2)}).ok());
  EXPECT_EQ(sink_.completed(), std::vector<int64_t>{4});
}

TEST_F(KvTransferServiceTest, RejectsMalformedStreamsNamingTheField) {
  const auto expect_invalid = [this](const std::vector<xpd::v1::KvChunk>& chunks,
                                     const std::string& field) {
    const grpc::Status status = Push(chunks);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << field;
    EXPECT_THAT(status.error_message(), HasSubstr(field));
  };
  expect_invalid({}, "empty");
  expect_invalid({Chunk(0, 2)}, "request_id");
  xpd::v1::KvChunk no_layers = Chunk(0, 2, true);
  no_layers.set_num_layers(0);
  expect_invalid({no_layers}, "num_layers");
  expect_invalid({Chunk(0, 2, true), Chunk(3, 1)}, "first_token");
  expect_invalid({Chunk(0, 2, true), Chunk(2, 3)}, "token_count");
  xpd::v1::KvChunk short_data = Chunk(0, 2, true);
  short_data.mutable_data()->pop_back();
  expect_invalid({short_data}, "data");
  expect_invalid({Chunk(0, 2, true)}, "num_tokens");  // ended early
  xpd::v1::KvChunk other = Chunk(2, 2);
  other.set_request_id("req-2");
  expect_invalid({Chunk(0, 2, true), other}, "request_id");
  EXPECT_TRUE(sink_.completed().empty());
}

}  // namespace
}  // namespace xpd::transport
