// Batched, chunked prefill for a prefill rank. Each step packs up to
// `max_step_tokens` prompt tokens from the queue, taking a chunk of a long
// prompt so it never blocks short ones for its whole length. When a prompt's
// last chunk is done, the first token is sampled and the request's latent KV
// is exported; its blocks are freed right after. One step thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/deepseek_model.h"
#include "common/runtime/latent_kv_pool.h"
#include "common/runtime/sampler.h"

namespace xpd::runtime {

struct PrefillResult {
  SampledToken first_token;
  int32_t num_layers = 0;
  int32_t latent_dim = 0;
  int64_t num_tokens = 0;
  std::vector<float> kv;  // [num_layers][num_tokens][latent_dim]
};

struct PrefillSchedulerOptions {
  int64_t max_step_tokens = 512;  // chunked-prefill token budget per step
  int32_t max_queued = 1024;      // RESOURCE_EXHAUSTED beyond
};

struct PrefillStats {
  int32_t queued = 0;
  int64_t outstanding_tokens = 0;  // prompt tokens not yet computed
  int64_t steps = 0;
};

class PrefillScheduler {
 public:
  PrefillScheduler(const model::DeepSeekModel& model, LatentKvPool& pool,
                   PrefillSchedulerOptions options = {});
  ~PrefillScheduler();  // stops the step thread; queued requests get CANCELLED

  // A rejected request (INVALID_ARGUMENT, ALREADY_EXISTS, RESOURCE_EXHAUSTED)
  // returns the error and `done` is never called. Otherwise `done` runs once,
  // on the step thread, with the result or an error (CANCELLED, ...).
  absl::Status Submit(const std::string& id, std::vector<int32_t> prompt,
                      const SamplingParams& sampling,
                      std::function<void(absl::StatusOr<PrefillResult>)> done);
  void Cancel(const std::string& id);

  PrefillStats stats() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace xpd::runtime
