#include "common/client/generation_client.h"

#include <atomic>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/rpc/grpc_server.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace xpd::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using xpd::v1::GenerateRequest;
using xpd::v1::GenerateResponse;

constexpr absl::Duration kWaitLimit = absl::Seconds(20);

// Streams canned responses. The request's model picks the behaviour:
//   ""           two token messages, then finish + usage
//   "midstream"  one token message, then UNAVAILABLE
//   "slow"       one token message, then waits until the client goes away
// FailNext(n) answers the next n calls of any method with UNAVAILABLE.
class FakeGeneration final : public xpd::v1::Generation::Service {
 public:
  grpc::Status Generate(grpc::ServerContext* context, const GenerateRequest* request,
                        grpc::ServerWriter<GenerateResponse>* writer) override {
    if (grpc::Status status = Admit(); !status.ok()) return status;
    GenerateResponse first;
    first.set_request_id(request->request_id());
    first.add_token_ids(1);
    first.add_token_ids(2);
    first.set_text("he");
    first.add_logprobs()->set_token_id(1);
    first.add_logprobs()->set_token_id(2);
    writer->Write(first);
    if (request->model() == "midstream") {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "decode rank lost");
    }
    if (request->model() == "slow") {
      WaitUntilCancelled(context);
      return grpc::Status::CANCELLED;
    }
    GenerateResponse second;
    second.add_token_ids(3);
    second.set_text("llo");
    second.add_logprobs()->set_token_id(3);
    writer->Write(second);
    GenerateResponse last;
    last.set_finish_reason(xpd::v1::FINISH_REASON_LENGTH);
    last.mutable_usage()->set_prompt_tokens(4);
    last.mutable_usage()->set_completion_tokens(3);
    writer->Write(last);
    return grpc::Status::OK;
  }

  grpc::Status Tokenize(grpc::ServerContext*, const xpd::v1::TokenizeRequest* request,
                        xpd::v1::TokenizeResponse* response) override {
    if (grpc::Status status = Admit(); !status.ok()) return status;
    for (char c : request->text()) response->add_ids(static_cast<unsigned char>(c));
    return grpc::Status::OK;
  }
  grpc::Status Detokenize(grpc::ServerContext*, const xpd::v1::DetokenizeRequest* request,
                          xpd::v1::DetokenizeResponse* response) override {
    if (grpc::Status status = Admit(); !status.ok()) return status;
    for (int32_t id : request->ids()) response->mutable_text()->push_back(static_cast<char>(id));
    return grpc::Status::OK;
  }
  grpc::Status ListModels(grpc::ServerContext*, const xpd::v1::ListModelsRequest*,
                          xpd::v1::ListModelsResponse* response) override {
    if (grpc::Status status = Admit(); !status.ok()) return status;
    xpd::v1::ModelInfo* model = response->add_models();
    model->set_id("tiny");
    model->set_context_length(4096);
    return grpc::Status::OK;
  }

  void FailNext(int n) {
    absl::MutexLock lock(&mu_);
    fail_next_ = n;
  }
  int calls() {
    absl::MutexLock lock(&mu_);
    return calls_;
  }
  // True once a "slow" call has seen its client go away.
  bool WaitForCancelledCalls(int n) {
    absl::MutexLock lock(&mu_);
    auto done = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return cancelled_calls_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&done), kWaitLimit);
  }

 private:
  grpc::Status Admit() {
    absl::MutexLock lock(&mu_);
    ++calls_;
    if (fail_next_ > 0) {
      --fail_next_;
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "warming up");
    }
    return grpc::Status::OK;
  }
  // The sync API has no cancellation callback: look every few milliseconds,
  // for at most kWaitLimit.
  void WaitUntilCancelled(grpc::ServerContext* context) {
    const absl::Time give_up = absl::Now() + kWaitLimit;
    absl::MutexLock lock(&mu_);
    while (!context->IsCancelled() && absl::Now() < give_up) {
      poll_.WaitWithTimeout(&mu_, absl::Milliseconds(5));
    }
    if (context->IsCancelled()) ++cancelled_calls_;
  }

  absl::Mutex mu_;
  absl::CondVar poll_;  // never signalled: a bounded wait between looks
  int fail_next_ ABSL_GUARDED_BY(mu_) = 0;
  int calls_ ABSL_GUARDED_BY(mu_) = 0;
  int cancelled_calls_ ABSL_GUARDED_BY(mu_) = 0;
};

class GenerationClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = rpc::GrpcServer::Start({.services = {&service_}});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    client_ = MakeClient(server_->address(), 3);
  }

  static std::unique_ptr<GenerationClient> MakeClient(const std::string& target, int max_retries) {
    auto client = GenerationClient::Create(target, {.default_timeout = kWaitLimit,
                                                    .max_retries = max_retries,
                                                    .initial_backoff = absl::Milliseconds(1),
                                                    .max_backoff = absl::Milliseconds(20)});
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? std::move(*client) : nullptr;
  }

  static GenerateRequest Request(const std::string& model = "") {
    GenerateRequest request;
    request.set_model(model);
    request.set_request_id("req-7");
    request.mutable_tokens()->add_ids(5);
    request.mutable_sampling()->set_max_tokens(3);
    return request;
  }

  FakeGeneration service_;
  std::unique_ptr<rpc::GrpcServer> server_;
  std::unique_ptr<GenerationClient> client_;
};

TEST_F(GenerationClientTest, GenerateGathersTheStream) {
  auto result = client_->Generate(Request());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->request_id, "req-7");
  EXPECT_THAT(result->token_ids, ElementsAre(1, 2, 3));
  EXPECT_EQ(result->text, "hello");
  EXPECT_EQ(result->finish_reason, xpd::v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(result->usage.prompt_tokens(), 4);
  EXPECT_EQ(result->usage.completion_tokens(), 3);
  ASSERT_EQ(result->logprobs.size(), 3u);
  EXPECT_EQ(result->logprobs[2].token_id(), 3);
}

TEST_F(GenerationClientTest, GenerateStreamDeliversEachResponseInOrder) {
  std::vector<std::string> texts;
  absl::Status status = client_->GenerateStream(Request(), [&](const GenerateResponse& response) {
    texts.push_back(response.text());
    return true;
  });
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_THAT(texts, ElementsAre("he", "llo", ""));
}

TEST_F(GenerationClientTest, CallbackReturningFalseCancels) {
  int seen = 0;
  absl::Status status = client_->GenerateStream(Request("slow"), [&](const GenerateResponse&) {
    ++seen;
    return false;
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(seen, 1);
  EXPECT_TRUE(service_.WaitForCancelledCalls(1));
}

TEST_F(GenerationClientTest, RetriesUnavailableBeforeTheFirstResponse) {
  service_.FailNext(2);
  auto result = client_->Generate(Request());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(result->token_ids, ElementsAre(1, 2, 3));
  EXPECT_EQ(service_.calls(), 3);
}

TEST_F(GenerationClientTest, GivesUpAfterMaxRetries) {
  service_.FailNext(10);
  auto result = client_->Generate(Request());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(result.status().message(), HasSubstr("warming up"));
  EXPECT_EQ(service_.calls(), 4);  // 1 + 3 retries
}

TEST_F(GenerationClientTest, NeverRetriesAfterAResponseArrived) {
  std::vector<int32_t> tokens;
  absl::Status status =
      client_->GenerateStream(Request("midstream"), [&](const GenerateResponse& r) {
        tokens.insert(tokens.end(), r.token_ids().begin(), r.token_ids().end());
        return true;
      });
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(tokens, ElementsAre(1, 2));
  EXPECT_EQ(service_.calls(), 1);
}

TEST_F(GenerationClientTest, DeadlineExceededOnASlowStream) {
  std::unique_ptr<GenerationStream> stream =
      client_->StartGenerate(Request("slow"), {.timeout = absl::Milliseconds(200)});
  GenerateResponse response;
  int responses = 0;
  while (stream->Next(&response)) ++responses;
  EXPECT_LE(responses, 1);
  EXPECT_EQ(stream->Finish().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(service_.WaitForCancelledCalls(1));
}

TEST_F(GenerationClientTest, CancelFromAnotherThreadEndsTheStream) {
  std::unique_ptr<GenerationStream> stream = client_->StartGenerate(Request("slow"));
  GenerateResponse response;
  ASSERT_TRUE(stream->Next(&response));
  EXPECT_THAT(response.token_ids(), ElementsAre(1, 2));
  std::atomic<bool> more{true};
  std::thread reader([&] { more = stream->Next(&response); });  // blocks until cancelled
  stream->Cancel();
  reader.join();
  EXPECT_FALSE(more);
  EXPECT_EQ(stream->Finish().code(), absl::StatusCode::kCancelled);
  stream->Cancel();  // idempotent
  EXPECT_TRUE(service_.WaitForCancelledCalls(1));
}

TEST_F(GenerationClientTest, DestroyingARunningStreamCancelsIt) {
  std::unique_ptr<GenerationStream> stream = client_->StartGenerate(Request("slow"));
  GenerateResponse response;
  ASSERT_TRUE(stream->Next(&response));
  stream.reset();
  EXPECT_TRUE(service_.WaitForCancelledCalls(1));
}

TEST_F(GenerationClientTest, CancelBeforeReadingIsCancelled) {
  std::unique_ptr<GenerationStream> stream = client_->StartGenerate(Request("slow"));
  stream->Cancel();
  GenerateResponse response;
  while (stream->Next(&response)) {
  }
  EXPECT_EQ(stream->Finish().code(), absl::StatusCode::kCancelled);
}

TEST_F(GenerationClientTest, UnaryCallsWithRetries) {
  service_.FailNext(1);
  xpd::v1::TokenizeRequest tokenize;
  tokenize.set_text("hi");
  auto ids = client_->Tokenize(tokenize);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_THAT(ids->ids(), ElementsAre('h', 'i'));

  xpd::v1::DetokenizeRequest detokenize;
  detokenize.add_ids('o');
  detokenize.add_ids('k');
  auto text = client_->Detokenize(detokenize);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(text->text(), "ok");

  service_.FailNext(10);
  EXPECT_EQ(client_->ListModels().status().code(), absl::StatusCode::kUnavailable);
  service_.FailNext(0);
  auto models = client_->ListModels();
  ASSERT_TRUE(models.ok()) << models.status();
  ASSERT_EQ(models->models_size(), 1);
  EXPECT_EQ(models->models(0).id(), "tiny");
}

TEST(GenerationClientConnectTest, UnreachableServerIsUnavailable) {
  std::string address;
  {  // a port nobody listens on any more
    auto server = rpc::GrpcServer::Start({});
    ASSERT_TRUE(server.ok()) << server.status();
    address = (*server)->address();
  }
  auto client = GenerationClient::Create(
      address,
      {.default_timeout = kWaitLimit, .max_retries = 2, .initial_backoff = absl::Milliseconds(1)});
  ASSERT_TRUE(client.ok());
  GenerateRequest request;
  request.mutable_tokens()->add_ids(1);
  EXPECT_EQ((*client)->Generate(request).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ((*client)->ListModels().status().code(), absl::StatusCode::kUnavailable);
}

TEST(GenerationClientConnectTest, RejectsBadOptions) {
  EXPECT_EQ(GenerationClient::Create("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GenerationClient::Create("127.0.0.1:1", {.max_retries = -1}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ClientOptionsTest, BackoffGrowsExponentiallyUpToTheCap) {
  const ClientOptions options{.initial_backoff = absl::Milliseconds(100),
                              .max_backoff = absl::Milliseconds(500),
                              .backoff_multiplier = 2.0};
  EXPECT_EQ(RetryBackoff(options, 1), absl::Milliseconds(100));
  EXPECT_EQ(RetryBackoff(options, 2), absl::Milliseconds(200));
  EXPECT_EQ(RetryBackoff(options, 3), absl::Milliseconds(400));
  EXPECT_EQ(RetryBackoff(options, 4), absl::Milliseconds(500));
  EXPECT_EQ(CallDeadline({.default_timeout = absl::InfiniteDuration()}, {}),
            absl::InfiniteFuture());
}

}  // namespace
}  // namespace xpd::client
