// Prefill -> KV payload -> decode through the two schedulers, against the
// reference fixtures and the single-process Generator: parity (greedy and
// seeded), continuous batching, KV accounting, cancellation and errors.
// Tests synchronize on the callbacks (futures bounded by kWait), never sleep.
#include "common/runtime/decode_scheduler.h"

#include <algorithm>
#include <atomic>
#include <future>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "tests/model/fixture_model.h"
#include "tests/model/scheduler_test_util.h"

namespace xpd::testing {
namespace {

using runtime::DecodeScheduler;
using runtime::DecodeStart;
using runtime::DecodeUpdate;
using runtime::FinishReason;
using runtime::PrefillResult;
using runtime::SamplingParams;

class SchedulerParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(SchedulerParityTest, ChunkedPrefillThenDecodeMatchesReferenceAndGenerator) {
  const std::string variant = GetParam();
  FixtureModel prefill_rank = LoadFixtureModel(variant);
  FixtureModel decode_rank = LoadFixtureModel(variant);
  ASSERT_NE(prefill_rank.pool, nullptr);
  ASSERT_NE(decode_rank.pool, nullptr);
  const std::vector<std::string> names = {"batch3/row0", "batch3/row1", "batch3/row2",
                                          "single_len1", "single_len7", "single_len33"};
  std::vector<Case> cases;
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& name : names) {
    cases.push_back(LoadCase(variant, name));
    prompts.push_back(cases.back().prompt);
  }
  const auto generated = Generate(decode_rank, prompts, std::vector<int64_t>(names.size(), 8));
  const auto results =
      PrefillAll(prefill_rank, prompts, std::vector<SamplingParams>(names.size(), kGreedy));
  ASSERT_EQ(results.size(), names.size());

  const int64_t width = decode_rank.model->config().latent_dim();
  for (size_t i = 0; i < names.size(); ++i) {
    const PrefillResult& r = results[i];
    EXPECT_EQ(r.first_token.token, cases[i].gen[0]) << names[i];
    EXPECT_NEAR(r.first_token.logprob, generated[i].logprobs[0], 1e-4) << names[i];
    ASSERT_EQ(r.num_tokens, static_cast<int64_t>(prompts[i].size()));
    ASSERT_EQ(r.num_layers, decode_rank.model->config().num_hidden_layers);
    ASSERT_EQ(r.latent_dim, width);
    const std::vector<float> full = FullPrefillKv(decode_rank, prompts[i]);
    ASSERT_EQ(r.kv.size(), full.size());
    EXPECT_LE(MaxAbsDiff(r.kv.data(), full.data(), full.size()), 1e-4) << names[i];
  }
  const base::NpyArray want = LoadNpy(ExpectedDir(variant) + "/single_len7/latent_kv.npy");
  ASSERT_EQ(want.f32.size(), results[4].kv.size());
  EXPECT_LE(MaxAbsDiff(results[4].kv.data(), want.f32.data(), want.f32.size()), 1e-4);

  const int64_t free_before = decode_rank.pool->num_free_blocks();
  std::vector<UpdateLog> logs(names.size());
  {
    DecodeScheduler decode(*decode_rank.model, *decode_rank.pool);
    for (size_t i = 0; i < names.size(); ++i) {
      const std::string id = absl::StrCat("r", i);
      ASSERT_TRUE(Transfer(decode, id, results[i], 8).ok());
      ASSERT_TRUE(decode.Start(id, StartOf(results[i], 8), logs[i].Callback()).ok());
    }
    for (size_t i = 0; i < names.size(); ++i) {
      ASSERT_TRUE(logs[i].WaitFinal()) << names[i];
      EXPECT_EQ(logs[i].tokens(), cases[i].gen) << names[i];
      EXPECT_EQ(logs[i].tokens(), generated[i].tokens) << names[i];
      EXPECT_EQ(logs[i].finished(), FinishReason::kLength);
      EXPECT_TRUE(logs[i].error().ok());
      const auto logprobs = logs[i].logprobs();
      ASSERT_EQ(logprobs.size(), generated[i].logprobs.size());
      for (size_t k = 0; k < logprobs.size(); ++k) {
        EXPECT_NEAR(logprobs[k], generated[i].logprobs[k], 1e-3);
      }
    }
    EXPECT_EQ(decode.stats().running, 0);
    EXPECT_EQ(decode.stats().kv_blocks_free, free_before);
  }
  for (const UpdateLog& log : logs) EXPECT_EQ(log.finals(), 1);
}

INSTANTIATE_TEST_SUITE_P(Variants, SchedulerParityTest, ::testing::Values("bf16", "fp8"),
                         VariantName);

TEST(DecodeSchedulerTest, SeededSamplingResumesAfterPrefillDraw) {
  FixtureModel prefill_rank = LoadFixtureModel("fp8");
  FixtureModel decode_rank = LoadFixtureModel("fp8");
  ASSERT_NE(decode_rank.pool, nullptr);
  const std::vector<std::vector<int32_t>> prompts = {{5, 17, 42},
                                                     LoadCase("fp8", "single_len7").prompt};
  const std::vector<SamplingParams> sampling = {{.temperature = 1.0f, .top_p = 0.9f, .seed = 1234},
                                                {.temperature = 0.8f, .top_k = 20, .seed = 7}};
  std::vector<std::vector<int32_t>> want;
  for (size_t i = 0; i < 2; ++i) {
    want.push_back(Generate(decode_rank, {prompts[i]}, {12}, sampling[i], false)[0].tokens);
  }
  const auto results = PrefillAll(prefill_rank, prompts, sampling);
  ASSERT_EQ(results.size(), 2u);
  std::vector<UpdateLog> logs(2);
  DecodeScheduler decode(*decode_rank.model, *decode_rank.pool);
  for (size_t i = 0; i < 2; ++i) {
    const std::string id = absl::StrCat("s", i);
    ASSERT_TRUE(Transfer(decode, id, results[i], 12).ok());
    ASSERT_TRUE(
        decode.Start(id, StartOf(results[i], 12, sampling[i], false), logs[i].Callback()).ok());
  }
  for (size_t i = 0; i < 2; ++i) {
    ASSERT_TRUE(logs[i].WaitFinal());
    EXPECT_EQ(logs[i].tokens(), want[i]) << "request " << i;
  }
}

TEST(DecodeSchedulerTest, RequestsJoinAndLeaveTheBatchEveryStep) {
  FixtureModel prefill_rank = LoadFixtureModel("bf16");
  FixtureModel decode_rank = LoadFixtureModel("bf16");
  ASSERT_NE(decode_rank.pool, nullptr);
  std::vector<std::vector<int32_t>> prompts;
  for (const char* name : {"single_len7", "batch3/row1", "single_len33", "batch3/row0"}) {
    prompts.push_back(LoadCase("bf16", name).prompt);
  }
  const std::vector<int64_t> max_tokens = {8, 3, 6, 1};
  const auto want = Generate(decode_rank, prompts, max_tokens);
  const auto results = PrefillAll(prefill_rank, prompts, std::vector<SamplingParams>(4, kGreedy));
  ASSERT_EQ(results.size(), 4u);
  const int64_t free_before = decode_rank.pool->num_free_blocks();

  std::vector<UpdateLog> logs(4);
  absl::Mutex mu;
  std::vector<int32_t> running_seen;  // stats().running at every update
  DecodeScheduler decode(*decode_rank.model, *decode_rank.pool);
  for (size_t i = 0; i < 4; ++i) {
    ASSERT_TRUE(Transfer(decode, absl::StrCat("c", i), results[i], max_tokens[i]).ok());
  }
  EXPECT_EQ(decode.stats().waiting, 4);
  auto start = [&](size_t i) {
    EXPECT_TRUE(
        decode.Start(absl::StrCat("c", i), StartOf(results[i], max_tokens[i]), logs[i].Callback())
            .ok());
  };
  for (size_t i = 0; i < 4; ++i) {
    logs[i].hook = [&, i](const DecodeUpdate&) {
      const int32_t running = decode.stats().running;
      absl::MutexLock lock(&mu);
      running_seen.push_back(running);
      // Request 0 brings in the others as it goes: 1 after its 2nd token,
      // 2 after its 3rd, 3 (finished by its first token) after its 4th.
      const size_t produced = logs[0].tokens().size();
      if (i == 0 && produced >= 2 && produced <= 4) start(produced - 1);
    };
  }
  start(0);
  for (size_t i = 0; i < 4; ++i) {
    ASSERT_TRUE(logs[i].WaitFinal()) << i;
    EXPECT_EQ(logs[i].tokens(), want[i].tokens) << "request " << i;
    EXPECT_EQ(logs[i].finished(), FinishReason::kLength);
  }
  absl::MutexLock lock(&mu);
  EXPECT_EQ(*std::max_element(running_seen.begin(), running_seen.end()), 3);
  EXPECT_EQ(running_seen.back(), 0);
  // Request 0 ran alone for its first step and the others came and went
  // while it ran: its 7 steps are all there were.
  EXPECT_EQ(decode.stats().steps, 7);
  EXPECT_EQ(decode.stats().running, 0);
  EXPECT_EQ(decode.stats().waiting, 0);
  EXPECT_EQ(decode.stats().kv_blocks_free, free_before);
}

TEST(DecodeSchedulerTest, StopRulesMatchGenerator) {
  FixtureModel prefill_rank = LoadFixtureModel("bf16");
  FixtureModel decode_rank = LoadFixtureModel("bf16");
  ASSERT_NE(decode_rank.pool, nullptr);
  const Case c = LoadCase("bf16", "single_len7");
  const auto results = PrefillAll(prefill_rank, {c.prompt}, {kGreedy});
  ASSERT_EQ(results.size(), 1u);
  std::vector<UpdateLog> logs(3);
  DecodeScheduler decode(*decode_rank.model, *decode_rank.pool);
  DecodeStart stop_at_3 = StartOf(results[0], 8);
  stop_at_3.stop_token_ids = {c.gen[3]};
  DecodeStart stop_at_first = StartOf(results[0], 8);
  stop_at_first.stop_token_ids = {c.gen[0]};
  DecodeStart eos_first = StartOf(results[0], 8, kGreedy, /*ignore_eos=*/false);
  eos_first.first_token.token = static_cast<int32_t>(decode_rank.model->config().eos_token_id);
  const DecodeStart starts[] = {stop_at_3, stop_at_first, eos_first};
  for (int i = 0; i < 3; ++i) {
    const std::string id = absl::StrCat("stop", i);
    ASSERT_TRUE(Transfer(decode, id, results[0], 8).ok());
    ASSERT_TRUE(decode.Start(id, starts[i], logs[i].Callback()).ok());
  }
  for (auto& log : logs) ASSERT_TRUE(log.WaitFinal());
  EXPECT_EQ(logs[0].tokens(), std::vector<int32_t>(c.gen.begin(), c.gen.begin() + 4));
  EXPECT_EQ(logs[1].tokens(), std::vector<int32_t>{c.gen[0]});
  EXPECT_EQ(logs[2].tokens(), std::vector<int32_t>{eos_first.first_token.token});
  for (auto& log : logs) EXPECT_EQ(log.finished(), FinishReason::kStop);
}

TEST(DecodeSchedulerTest, CancelEndsOnlyThatRequestWithOneCancelledUpdate) {
  FixtureModel prefill_rank = LoadFixtureModel("bf16");
  FixtureModel decode_rank = LoadFixtureModel("bf16");
  ASSERT_NE(decode_rank.pool, nullptr);
  const std::vector<std::vector<int32_t>> prompts = {LoadCase("bf16", "single_len7").prompt,
                                                     LoadCase("bf16", "batch3/row1").prompt};
  const auto want = Generate(decode_rank, {prompts[1]}, {8});
  const auto results = PrefillAll(prefill_rank, prompts, {kGreedy, kGreedy});
  ASSERT_EQ(results.size(), 2u);
  const int64_t free_before = decode_rank.pool->num_free_blocks();
  UpdateLog long_log, self_log, other_log;
  std::promise<void> third_token;
  {
    DecodeScheduler decode(*decode_rank.model, *decode_rank.pool);
    // Hooks look at token updates only (the final CANCELLED one has none).
    long_log.hook = [&](const DecodeUpdate& u) {
      if (!u.tokens.empty() && long_log.tokens().size() == 3) third_token.set_value();
    };
    self_log.hook = [&](const DecodeUpdate& u) {  // cancels itself from the step thread
      if (!u.tokens.empty() && self_log.tokens().size() == 2) decode.Cancel("self");
    };
    ASSERT_TRUE(Transfer(decode, "long", results[0], 200).ok());
    ASSERT_TRUE(Transfer(decode, "self", results[0], 8).ok());
    ASSERT_TRUE(Transfer(decode, "other", results[1], 8).ok());
    ASSERT_TRUE(decode.Start("long", StartOf(results[0], 200), long_log.Callback()).ok());
    ASSERT_TRUE(decode.Start("self", StartOf(results[0], 8), self_log.Callback()).ok());
    ASSERT_TRUE(decode.Start("other", StartOf(results[1], 8), other_log.Callback()).ok());
    ASSERT_EQ(third_token.get_future().wait_for(kWait), std::future_status::ready);
    decode.Cancel("long");  // from another thread, possibly while a step runs
    ASSERT_TRUE(long_log.WaitFinal());
    ASSERT_TRUE(self_log.WaitFinal());
    ASSERT_TRUE(other_log.WaitFinal());
    EXPECT_EQ(long_log.error().code(), absl::StatusCode::kCancelled);
    EXPECT_FALSE(long_log.finished().has_value());
    EXPECT_LT(long_log.tokens().size(), 200u);
    EXPECT_EQ(self_log.error().code(), absl::StatusCode::kCancelled);
    EXPECT_EQ(self_log.tokens().size(), 2u);  // dropped at the next boundary
    EXPECT_EQ(other_log.tokens(), want[0].tokens);
    EXPECT_EQ(decode.stats().kv_blocks_free, free_before);
    decode.Cancel("long");  // finished: nothing happens
  }
  EXPECT_EQ(long_log.finals(), 1);
  EXPECT_EQ(self_log.finals(), 1);
  EXPECT_EQ(other_log.finals(), 1);
}

TEST(DecodeSchedulerTest, MaxRunningQueuesStartedRequestsInOrder) {
  FixtureModel prefill_rank = LoadFixtureModel("bf16");
  FixtureModel decode_rank = LoadFixtureModel("bf16");
  ASSERT_NE(decode_rank.pool, nullptr);
  const std::vector<std::vector<int32_t>> prompts = {LoadCase("bf16", "single_len7").prompt,
                                                     LoadCase("bf16", "batch3/row2").prompt};
  const auto want = Generate(decode_rank, prompts, {5, 5});
  const auto results = PrefillAll(prefill_rank, prompts, {kGreedy, kGreedy});
  ASSERT_EQ(results.size(), 2u);
  const int64_t free_before = decode_rank.pool->num_free_blocks();
  UpdateLog first, cancelled, last, instant;
  std::atomic<int32_t> max_running = 0;
  std::atomic<size_t> first_tokens_when_instant_ended = 0;
  std::promise<void> started;
  std::shared_future<void> all_started = started.get_future().share();
  {
    DecodeScheduler decode(*decode_rank.model, *decode_rank.pool, {.max_running = 1});
    first.hook = [&](const DecodeUpdate&) {
      max_running = std::max(max_running.load(), decode.stats().running);
      // Held at its first update until the others are started, then
      // cancels the one queued behind it.
      if (first.tokens().size() != 1) return;
      EXPECT_EQ(all_started.wait_for(kWait), std::future_status::ready);
      decode.Cancel("waiting");
    };
    last.hook = [&](const DecodeUpdate&) {
      max_running = std::max(max_running.load(), decode.stats().running);
    };
    instant.hook = [&](const DecodeUpdate&) {
      first_tokens_when_instant_ended = first.tokens().size();
    };
    ASSERT_TRUE(Transfer(decode, "first", results[0], 5).ok());
    ASSERT_TRUE(Transfer(decode, "waiting", results[0], 5).ok());
    ASSERT_TRUE(Transfer(decode, "last", results[1], 5).ok());
    ASSERT_TRUE(decode.Start("first", StartOf(results[0], 5), first.Callback()).ok());
    ASSERT_TRUE(decode.Start("waiting", StartOf(results[0], 5), cancelled.Callback()).ok());
    ASSERT_TRUE(decode.Start("last", StartOf(results[1], 5), last.Callback()).ok());
    // Ends with its first token: needs no slot, so it does not wait.
    ASSERT_TRUE(Transfer(decode, "instant", results[1], 1).ok());
    ASSERT_TRUE(decode.Start("instant", StartOf(results[1], 1), instant.Callback()).ok());
    started.set_value();
    for (UpdateLog* log : {&first, &cancelled, &last, &instant}) ASSERT_TRUE(log->WaitFinal());
    EXPECT_EQ(instant.tokens(), std::vector<int32_t>{want[1].tokens[0]});
    // At the boundary that admitted `first` or the one after its first step.
    EXPECT_LE(first_tokens_when_instant_ended.load(), 2u);
    EXPECT_EQ(first.tokens(), want[0].tokens);
    EXPECT_TRUE(cancelled.tokens().empty());
    EXPECT_EQ(cancelled.error().code(), absl::StatusCode::kCancelled);
    EXPECT_EQ(last.tokens(), want[1].tokens);
    EXPECT_EQ(max_running.load(), 1);
    EXPECT_EQ(decode.stats().steps, 8);  // 4 + 4, one request at a time
    EXPECT_EQ(decode.stats().kv_blocks_free, free_before);
  }
}

TEST(DecodeSchedulerTest, RejectsBadCallsPreciselyAndLeaksNothing) {
  FixtureModel f = LoadFixtureModel("bf16");
  ASSERT_NE(f.pool, nullptr);
  const int64_t free_before = f.pool->num_free_blocks();  // 64 blocks of 16
  const int32_t layers = f.model->config().num_hidden_layers;
  const int32_t width = f.model->config().latent_dim();
  DecodeScheduler decode(*f.model, *f.pool);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(decode.Reserve(absl::StrCat("big", i), 200, 50).ok());
  const absl::Status full = decode.Reserve("one_more", 4, 4);
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(full.message().find("need 1 blocks, 0 free"), std::string::npos) << full;
  for (int i = 0; i < 4; ++i) decode.Release(absl::StrCat("big", i));
  EXPECT_EQ(f.pool->num_free_blocks(), free_before);

  EXPECT_EQ(decode.Reserve("ctx", 200, 57).code(), absl::StatusCode::kInvalidArgument);  // > 256
  EXPECT_EQ(decode.Reserve("zero", 4, 0).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(decode.Reserve("a", 4, 4).ok());
  EXPECT_EQ(decode.Reserve("a", 4, 4).code(), absl::StatusCode::kAlreadyExists);

  const std::vector<float> rows(layers * 2 * width, 0.0f);
  auto write = [&](const std::string& id, int64_t first, int32_t n_layers, int32_t dim) {
    return decode.WriteKv(id, first, 2, n_layers, dim,
                          std::span<const float>(rows).first(n_layers * 2 * dim));
  };
  EXPECT_EQ(write("nobody", 0, layers, width).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(write("a", 0, layers, width - 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(write("a", 0, layers - 1, width).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(write("a", 3, layers, width).code(), absl::StatusCode::kInvalidArgument);  // [3, 5)
  EXPECT_EQ(decode.WriteKv("a", 0, 1, layers, width, rows).code(),
            absl::StatusCode::kInvalidArgument);  // size mismatch
  ASSERT_TRUE(write("a", 0, layers, width).ok());
  EXPECT_EQ(decode.CompleteKv("a", 2).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(decode.CompleteKv("a", 4).code(), absl::StatusCode::kFailedPrecondition);  // 2 of 4
  EXPECT_EQ(decode.CompleteKv("nobody", 4).code(), absl::StatusCode::kNotFound);

  UpdateLog log;
  DecodeStart start{.prompt_tokens = 4, .first_token = {.token = 3}, .max_tokens = 4};
  EXPECT_EQ(decode.Start("a", start, log.Callback()).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(decode.Start("nobody", start, log.Callback()).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(write("a", 2, layers, width).ok());
  ASSERT_TRUE(decode.CompleteKv("a", 4).ok());
  EXPECT_EQ(write("a", 0, layers, width).code(), absl::StatusCode::kFailedPrecondition);
  DecodeStart bad = start;
  bad.first_token.token = 512;
  EXPECT_EQ(decode.Start("a", bad, log.Callback()).code(), absl::StatusCode::kInvalidArgument);
  bad = start;
  bad.max_tokens = 5;  // beyond the reservation
  EXPECT_EQ(decode.Start("a", bad, log.Callback()).code(), absl::StatusCode::kInvalidArgument);
  bad = start;
  bad.sampling.top_p = 0.0f;
  EXPECT_EQ(decode.Start("a", bad, log.Callback()).code(), absl::StatusCode::kInvalidArgument);
  decode.Cancel("a");  // not started: freed at once, nobody to notify
  EXPECT_EQ(f.pool->num_free_blocks(), free_before);
  EXPECT_EQ(decode.stats().waiting, 0);
  EXPECT_EQ(log.finals(), 0);
}

TEST(DecodeSchedulerTest, ForwardErrorFailsTheStepAndTheSchedulerGoesOn) {
  FixtureModel f = LoadFixtureModel("bf16");
  ASSERT_NE(f.model, nullptr);
  // A cache whose rows are wider than the model's: every Forward fails.
  const int32_t width = f.model->config().latent_dim() + 8;
  auto pool = runtime::LatentKvPool::Create({.num_layers = f.model->cache_layers(),
                                             .latent_dim = width,
                                             .block_size = 16,
                                             .num_blocks = 8});
  ASSERT_TRUE(pool.ok());
  const int32_t layers = f.model->config().num_hidden_layers;
  const std::vector<float> rows(layers * 3 * width, 0.5f);
  UpdateLog failed, short_one;
  DecodeScheduler decode(*f.model, **pool);
  for (const char* id : {"fails", "one_token"}) {
    ASSERT_TRUE(decode.Reserve(id, 3, 4).ok());
    ASSERT_TRUE(decode.WriteKv(id, 0, 3, layers, width, rows).ok());
    ASSERT_TRUE(decode.CompleteKv(id, 3).ok());
  }
  DecodeStart start{
      .prompt_tokens = 3, .first_token = {.token = 7}, .max_tokens = 4, .ignore_eos = true};
  ASSERT_TRUE(decode.Start("fails", start, failed.Callback()).ok());
  ASSERT_TRUE(failed.WaitFinal());
  EXPECT_EQ(failed.error().code(), absl::StatusCode::kInvalidArgument) << failed.error();
  EXPECT_EQ(failed.tokens(), std::vector<int32_t>{7});  // the first token, then the error
  start.max_tokens = 1;                                 // done without a step
  ASSERT_TRUE(decode.Start("one_token", start, short_one.Callback()).ok());
  ASSERT_TRUE(short_one.WaitFinal());
  EXPECT_EQ(short_one.finished(), FinishReason::kLength);
  EXPECT_EQ((*pool)->num_free_blocks(), 8);
}

}  // namespace
}  // namespace xpd::testing
