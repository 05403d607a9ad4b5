// The chunked prefill scheduler over the reference fixtures: first tokens,
// chunk sharing between long and short prompts, waiting for KV blocks,
// validation, the queue bound, cancellation and step failures. Tests
// synchronize on the callbacks (futures bounded by kWait), never sleep.
#include "common/runtime/prefill_scheduler.h"

#include <atomic>
#include <chrono>
#include <future>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "tests/model/fixture_model.h"

namespace xpd::testing {
namespace {

using runtime::PrefillResult;
using runtime::PrefillScheduler;
using runtime::SamplingParams;

constexpr auto kWait = std::chrono::seconds(60);
const SamplingParams kGreedy{.temperature = 0.0f};

// The outcome of one request; `hook` runs on the step thread first.
class Outcome {
 public:
  std::function<void(absl::StatusOr<PrefillResult>)> Callback() {
    return [this](absl::StatusOr<PrefillResult> r) {
      if (hook) hook(r);
      if (calls_.fetch_add(1) == 0) promise_.set_value(std::move(r));
    };
  }
  // The result, or DEADLINE_EXCEEDED after kWait.
  absl::StatusOr<PrefillResult> Get() {
    if (future_.wait_for(kWait) != std::future_status::ready) {
      return absl::DeadlineExceededError("no result");
    }
    return future_.get();
  }
  int calls() const { return calls_.load(); }

  std::function<void(const absl::StatusOr<PrefillResult>&)> hook;

 private:
  std::atomic<int> calls_ = 0;
  std::promise<absl::StatusOr<PrefillResult>> promise_;
  std::future<absl::StatusOr<PrefillResult>> future_ = promise_.get_future();
};

struct Case {
  std::vector<int32_t> prompt;
  int32_t first = 0;  // reference greedy first token
};

Case LoadCase(const std::string& name) {
  const std::string dir = ExpectedDir("bf16") + "/" + name;
  return {LoadIds(dir + "/prompt_ids.npy"), LoadIds(dir + "/gen_ids.npy")[0]};
}

// Blocks the step thread inside a request's `done` until released, so the
// queue can be observed and filled deterministically.
class StepGate {
 public:
  void Block(const absl::StatusOr<PrefillResult>&) {
    entered_.set_value();
    release_future_.wait_for(kWait);
  }
  bool WaitEntered() { return entered_future_.wait_for(kWait) == std::future_status::ready; }
  void Release() { release_.set_value(); }

 private:
  std::promise<void> entered_, release_;
  std::future<void> entered_future_ = entered_.get_future();
  std::future<void> release_future_ = release_.get_future();
};

TEST(PrefillSchedulerTest, LongPromptSharesStepsWithShortOnes) {
  FixtureModel f = LoadFixtureModel("bf16");
  ASSERT_NE(f.pool, nullptr);
  const Case long_case = LoadCase("single_len33"), short_case = LoadCase("batch3/row0");
  const int64_t free_before = f.pool->num_free_blocks();
  absl::Mutex mu;
  std::vector<std::string> order;
  Outcome long_outcome, short_outcome;
  long_outcome.hook = [&](const auto&) {
    absl::MutexLock lock(&mu);
    order.push_back("long");
  };
  short_outcome.hook = [&](const auto&) {
    absl::MutexLock lock(&mu);
    order.push_back("short");
  };
  // Both are queued while the step thread is held in a one-token request's
  // done, so the first step sees them together.
  StepGate gate;
  Outcome gated;
  gated.hook = [&](const auto& r) { gate.Block(r); };
  PrefillScheduler prefill(*f.model, *f.pool, {.max_step_tokens = 8});
  ASSERT_TRUE(prefill.Submit("gated", {1}, kGreedy, gated.Callback()).ok());
  ASSERT_TRUE(gate.WaitEntered());
  ASSERT_TRUE(prefill.Submit("long", long_case.prompt, kGreedy, long_outcome.Callback()).ok());
  ASSERT_TRUE(prefill.Submit("short", short_case.prompt, kGreedy, short_outcome.Callback()).ok());
  gate.Release();
  auto long_result = long_outcome.Get();
  auto short_result = short_outcome.Get();
  ASSERT_TRUE(long_result.ok()) << long_result.status();
  ASSERT_TRUE(short_result.ok()) << short_result.status();
  EXPECT_EQ(long_result->first_token.token, long_case.first);
  EXPECT_EQ(short_result->first_token.token, short_case.first);
  EXPECT_EQ(long_result->num_tokens, 33);
  EXPECT_EQ(long_result->num_layers, f.model->config().num_hidden_layers);
  EXPECT_EQ(long_result->kv.size(), 33u * long_result->num_layers * long_result->latent_dim);
  {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(order, (std::vector<std::string>{"short", "long"}));
  }
  // 1 for the gated request, then 37 tokens in steps of 8: long 8, then
  // short 4 + long 4 (long went behind short), then long 8, 8, 5.
  EXPECT_EQ(prefill.stats().steps, 6);
  EXPECT_EQ(prefill.stats().queued, 0);
  EXPECT_EQ(prefill.stats().outstanding_tokens, 0);
  EXPECT_EQ(f.pool->num_free_blocks(), free_before);
}

TEST(PrefillSchedulerTest, RequestsWaitForBlocksInOrder) {
  FixtureModel f = LoadFixtureModel("bf16");
  ASSERT_NE(f.model, nullptr);
  // Room for one 33-token prompt (3 blocks of 16) at a time.
  auto pool = runtime::LatentKvPool::Create({.num_layers = f.model->cache_layers(),
                                             .latent_dim = f.pool->cache().latent_dim,
                                             .block_size = 16,
                                             .num_blocks = 4});
  ASSERT_TRUE(pool.ok());
  const Case c = LoadCase("single_len33");
  std::vector<Outcome> outcomes(3);
  PrefillScheduler prefill(*f.model, **pool, {.max_step_tokens = 16});
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(
        prefill.Submit(absl::StrCat("r", i), c.prompt, kGreedy, outcomes[i].Callback()).ok());
  }
  for (auto& outcome : outcomes) {
    auto result = outcome.Get();
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->first_token.token, c.first);
  }
  EXPECT_EQ((*pool)->num_free_blocks(), 4);
  // A prompt the pool can never hold is refused instead of waiting forever.
  const std::vector<int32_t> huge(65, 3);
  EXPECT_EQ(prefill.Submit("huge", huge, kGreedy, outcomes[0].Callback()).code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(PrefillSchedulerTest, RejectsBadRequestsWithoutCallingDone) {
  FixtureModel f = LoadFixtureModel("bf16");
  ASSERT_NE(f.pool, nullptr);
  Outcome outcome;
  {
    PrefillScheduler prefill(*f.model, *f.pool);
    auto submit = [&](std::vector<int32_t> prompt, SamplingParams sampling = kGreedy) {
      return prefill.Submit("bad", std::move(prompt), sampling, outcome.Callback()).code();
    };
    const auto kInvalid = absl::StatusCode::kInvalidArgument;
    EXPECT_EQ(submit({}), kInvalid);
    EXPECT_EQ(submit({1, 512}), kInvalid);  // outside the 512-entry vocabulary
    EXPECT_EQ(submit({-1}), kInvalid);
    EXPECT_EQ(submit(std::vector<int32_t>(256, 3)), kInvalid);  // the whole context
    EXPECT_EQ(submit({1, 2}, {.temperature = 1.0f, .top_p = 0.0f}), kInvalid);
    EXPECT_EQ(prefill.Submit("bad", {1, 2}, kGreedy, nullptr).code(), kInvalid);
    const absl::Status named = prefill.Submit("bad", {1, 512}, kGreedy, outcome.Callback());
    EXPECT_NE(named.message().find("prompt[1] = 512"), std::string::npos) << named;
    EXPECT_EQ(prefill.stats().queued, 0);
  }
  EXPECT_EQ(outcome.calls(), 0);
}

TEST(PrefillSchedulerTest, QueueIsBoundedAndCancelDropsQueuedRequests) {
  FixtureModel f = LoadFixtureModel("bf16");
  ASSERT_NE(f.pool, nullptr);
  const Case c = LoadCase("single_len7");
  const int64_t free_before = f.pool->num_free_blocks();
  StepGate gate;
  Outcome gated, kept, cancelled, third, unused;
  gated.hook = [&](const auto& r) { gate.Block(r); };
  {
    PrefillScheduler prefill(*f.model, *f.pool, {.max_step_tokens = 64, .max_queued = 3});
    ASSERT_TRUE(prefill.Submit("gated", c.prompt, kGreedy, gated.Callback()).ok());
    ASSERT_TRUE(gate.WaitEntered());  // the step thread is inside gated's done
    ASSERT_TRUE(prefill.Submit("kept", c.prompt, kGreedy, kept.Callback()).ok());
    ASSERT_TRUE(prefill.Submit("cancelled", c.prompt, kGreedy, cancelled.Callback()).ok());
    EXPECT_EQ(prefill.Submit("kept", c.prompt, kGreedy, unused.Callback()).code(),
              absl::StatusCode::kAlreadyExists);
    ASSERT_TRUE(prefill.Submit("third", c.prompt, kGreedy, third.Callback()).ok());
    EXPECT_EQ(prefill.Submit("fourth", c.prompt, kGreedy, unused.Callback()).code(),
              absl::StatusCode::kResourceExhausted);
    EXPECT_EQ(prefill.stats().queued, 3);
    EXPECT_EQ(prefill.stats().outstanding_tokens, 21);
    prefill.Cancel("cancelled");
    prefill.Cancel("nobody");
    gate.Release();
    for (Outcome* outcome : {&kept, &third}) {
      auto result = outcome->Get();
      ASSERT_TRUE(result.ok()) << result.status();
      EXPECT_EQ(result->first_token.token, c.first);
    }
    EXPECT_EQ(cancelled.Get().status().code(), absl::StatusCode::kCancelled);
    ASSERT_TRUE(gated.Get().ok());
    EXPECT_EQ(f.pool->num_free_blocks(), free_before);
  }
  EXPECT_EQ(cancelled.calls(), 1);
  EXPECT_EQ(unused.calls(), 0);
}

TEST(PrefillSchedulerTest, CancelDropsPartlyComputedRequest) {
  FixtureModel f = LoadFixtureModel("bf16");
  ASSERT_NE(f.pool, nullptr);
  const int64_t free_before = f.pool->num_free_blocks();
  const Case short_case = LoadCase("batch3/row0");
  StepGate gate;
  Outcome gated, short_outcome, long_outcome;
  gated.hook = [&](const auto& r) { gate.Block(r); };
  {
    PrefillScheduler prefill(*f.model, *f.pool, {.max_step_tokens = 8});
    // Queued together, the short prompt is done in the second step (after
    // 8 tokens of the long one); the long one needs 25 and is cancelled.
    short_outcome.hook = [&](const auto&) { prefill.Cancel("long"); };
    ASSERT_TRUE(prefill.Submit("gated", {1}, kGreedy, gated.Callback()).ok());
    ASSERT_TRUE(gate.WaitEntered());
    ASSERT_TRUE(
        prefill.Submit("long", std::vector<int32_t>(200, 9), kGreedy, long_outcome.Callback())
            .ok());
    ASSERT_TRUE(prefill.Submit("short", short_case.prompt, kGreedy, short_outcome.Callback()).ok());
    gate.Release();
    auto short_result = short_outcome.Get();
    ASSERT_TRUE(short_result.ok()) << short_result.status();
    EXPECT_EQ(short_result->first_token.token, short_case.first);
    EXPECT_EQ(long_outcome.Get().status().code(), absl::StatusCode::kCancelled);
    EXPECT_EQ(prefill.stats().steps, 3);  // gated; long 8; short 4 + long 4
    EXPECT_EQ(prefill.stats().queued, 0);
    EXPECT_EQ(f.pool->num_free_blocks(), free_before);
  }
  EXPECT_EQ(long_outcome.calls(), 1);
}

TEST(PrefillSchedulerTest, DestructorCancelsQueuedRequests) {
  FixtureModel f = LoadFixtureModel("bf16");
  ASSERT_NE(f.pool, nullptr);
  StepGate gate;
  Outcome gated, queued;
  gated.hook = [&](const auto& r) { gate.Block(r); };
  {
    PrefillScheduler prefill(*f.model, *f.pool);
    ASSERT_TRUE(prefill.Submit("gated", {1, 2, 3}, kGreedy, gated.Callback()).ok());
    ASSERT_TRUE(gate.WaitEntered());
    ASSERT_TRUE(prefill.Submit("queued", {4, 5, 6}, kGreedy, queued.Callback()).ok());
    gate.Release();  // the destructor may now run before or after "queued" is computed
  }
  auto result = queued.Get();
  EXPECT_TRUE(result.ok() || result.status().code() == absl::StatusCode::kCancelled)
      << result.status();
  EXPECT_EQ(queued.calls(), 1);
}

TEST(PrefillSchedulerTest, ForwardErrorFailsTheStepAndTheSchedulerGoesOn) {
  FixtureModel f = LoadFixtureModel("bf16");
  ASSERT_NE(f.model, nullptr);
  // A cache whose rows are wider than the model's: every Forward fails.
  auto pool = runtime::LatentKvPool::Create({.num_layers = f.model->cache_layers(),
                                             .latent_dim = f.pool->cache().latent_dim + 8,
                                             .block_size = 16,
                                             .num_blocks = 8});
  ASSERT_TRUE(pool.ok());
  Outcome first, second;
  PrefillScheduler prefill(*f.model, **pool);
  ASSERT_TRUE(prefill.Submit("first", {1, 2, 3}, kGreedy, first.Callback()).ok());
  EXPECT_EQ(first.Get().status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(prefill.Submit("second", {4, 5}, kGreedy, second.Callback()).ok());
  EXPECT_EQ(second.Get().status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*pool)->num_free_blocks(), 8);
}

}  // namespace
}  // namespace xpd::testing
