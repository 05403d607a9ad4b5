// Helpers for the scheduler tests: run prompts through a PrefillScheduler,
// ship the KV into a runtime::DecodeScheduler in pieces, collect decode updates, and
// the single-process references (Generator, one unchunked prefill).
#pragma once

#include <algorithm>
#include <chrono>
#include <functional>
#include <future>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/base/status_macros.h"
#include "common/runtime/decode_scheduler.h"
#include "common/runtime/generator.h"
#include "common/runtime/prefill_scheduler.h"
#include "gtest/gtest.h"
#include "tests/model/fixture_model.h"

namespace xpd::testing {

inline constexpr auto kWait = std::chrono::seconds(60);
inline const runtime::SamplingParams kGreedy{.temperature = 0.0f};

// One request's updates. `hook` runs on the step thread after each update.
class UpdateLog {
 public:
  std::function<void(const runtime::DecodeUpdate&)> Callback() {
    return [this](const runtime::DecodeUpdate& u) {
      const bool final = u.finished.has_value() || !u.error.ok();
      int finals_now;
      {
        absl::MutexLock lock(&mu_);
        for (const auto& t : u.tokens) {
          tokens_.push_back(t.token);
          logprobs_.push_back(t.logprob);
        }
        if (final) {
          finished_ = u.finished;
          error_ = u.error;
        }
        finals_now = finals_ += final ? 1 : 0;
      }
      if (hook) hook(u);
      if (final && finals_now == 1) final_.set_value();
    };
  }
  bool WaitFinal() { return future_.wait_for(kWait) == std::future_status::ready; }
  std::vector<int32_t> tokens() const { return Locked(tokens_); }
  std::vector<float> logprobs() const { return Locked(logprobs_); }
  std::optional<runtime::FinishReason> finished() const { return Locked(finished_); }
  absl::Status error() const { return Locked(error_); }
  int finals() const { return Locked(finals_); }

  std::function<void(const runtime::DecodeUpdate&)> hook;

 private:
  template <typename T>
  T Locked(const T& value) const {
    absl::MutexLock lock(&mu_);
    return value;
  }
  mutable absl::Mutex mu_;
  std::vector<int32_t> tokens_;
  std::vector<float> logprobs_;
  std::optional<runtime::FinishReason> finished_;
  absl::Status error_;
  int finals_ = 0;
  std::promise<void> final_;
  std::future<void> future_ = final_.get_future();
};

struct Case {
  std::vector<int32_t> prompt;
  std::vector<int32_t> gen;  // reference greedy ids
};

inline Case LoadCase(const std::string& variant, const std::string& name) {
  const std::string dir = ExpectedDir(variant) + "/" + name;
  return {LoadIds(dir + "/prompt_ids.npy"), LoadIds(dir + "/gen_ids.npy")};
}

// Runs the prompts through one PrefillScheduler, all submitted at once, in
// chunks of `step_tokens`.
inline std::vector<runtime::PrefillResult> PrefillAll(
    FixtureModel& f, const std::vector<std::vector<int32_t>>& prompts,
    const std::vector<runtime::SamplingParams>& sampling, int64_t step_tokens = 8) {
  std::vector<std::promise<absl::StatusOr<runtime::PrefillResult>>> promises(prompts.size());
  std::vector<runtime::PrefillResult> results;
  runtime::PrefillScheduler prefill(*f.model, *f.pool, {.max_step_tokens = step_tokens});
  for (size_t i = 0; i < prompts.size(); ++i) {
    absl::Status s =
        prefill.Submit(absl::StrCat("p", i), prompts[i], sampling[i],
                       [&promise = promises[i]](absl::StatusOr<runtime::PrefillResult> r) {
                         promise.set_value(r);
                       });
    EXPECT_TRUE(s.ok()) << s;
  }
  for (auto& promise : promises) {
    auto future = promise.get_future();
    if (future.wait_for(kWait) != std::future_status::ready) {
      ADD_FAILURE() << "prefill timed out";
      return {};
    }
    auto result = future.get();
    EXPECT_TRUE(result.ok()) << result.status();
    results.push_back(result.ok() ? *result : runtime::PrefillResult{});
  }
  return results;
}

// Announces the request and ships its KV in pieces of `piece` tokens, last
// piece first (order must not matter), then completes it.
inline absl::Status Transfer(runtime::DecodeScheduler& decode, const std::string& id,
                             const runtime::PrefillResult& r, int64_t max_tokens,
                             int64_t piece = 3) {
  XPD_RETURN_IF_ERROR(decode.Reserve(id, r.num_tokens, max_tokens));
  const int64_t width = r.latent_dim;
  for (int64_t first = (r.num_tokens - 1) / piece * piece; first >= 0; first -= piece) {
    const int64_t count = std::min(piece, r.num_tokens - first);
    std::vector<float> rows;
    for (int32_t layer = 0; layer < r.num_layers; ++layer) {
      const float* src = &r.kv[(layer * r.num_tokens + first) * width];
      rows.insert(rows.end(), src, src + count * width);
    }
    XPD_RETURN_IF_ERROR(decode.WriteKv(id, first, count, r.num_layers, r.latent_dim, rows));
  }
  return decode.CompleteKv(id, r.num_tokens);
}

inline runtime::DecodeStart StartOf(const runtime::PrefillResult& r, int64_t max_tokens,
                                    runtime::SamplingParams sampling = kGreedy,
                                    bool ignore_eos = true) {
  return {.prompt_tokens = r.num_tokens,
          .first_token = r.first_token,
          .max_tokens = max_tokens,
          .sampling = sampling,
          .ignore_eos = ignore_eos};
}

inline std::vector<runtime::GenerateResult> Generate(
    FixtureModel& f, const std::vector<std::vector<int32_t>>& prompts,
    const std::vector<int64_t>& max_tokens, runtime::SamplingParams sampling = kGreedy,
    bool ignore_eos = true) {
  std::vector<runtime::GenerateRequest> requests;
  for (size_t i = 0; i < prompts.size(); ++i) {
    requests.push_back({.prompt = prompts[i],
                        .max_tokens = max_tokens[i],
                        .sampling = sampling,
                        .ignore_eos = ignore_eos});
  }
  auto results = runtime::Generator(*f.model, *f.pool).Generate(requests);
  EXPECT_TRUE(results.ok()) << results.status();
  return results.ok() ? *results : std::vector<runtime::GenerateResult>(prompts.size());
}

// Latent rows [layers][tokens][latent_dim] after one unchunked prefill.
inline std::vector<float> FullPrefillKv(FixtureModel& f, const std::vector<int32_t>& prompt) {
  std::vector<int32_t> blocks;
  EXPECT_TRUE(f.pool->Reserve(prompt.size(), &blocks).ok());
  model::ForwardBatch batch;
  batch.sequences.push_back({.tokens = prompt, .start = 0, .block_table = blocks});
  model::ForwardOutput output;
  EXPECT_TRUE(f.model->Forward(batch, f.pool->cache(), &output).ok());
  std::vector<float> kv;
  const auto& cache = f.pool->cache();
  for (int32_t layer = 0; layer < f.model->config().num_hidden_layers; ++layer) {
    for (size_t t = 0; t < prompt.size(); ++t) {
      const float* row = cache.Row(blocks.data(), layer, t);
      kv.insert(kv.end(), row, row + cache.latent_dim);
    }
  }
  f.pool->Free(blocks);
  return kv;
}
}  // namespace xpd::testing
