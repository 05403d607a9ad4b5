// Continuous batching for a decode rank. Requests reserve KV blocks when
// announced, receive their prompt's latent KV (KvSink), then join the running
// batch; every step decodes one token for every running request over the
// paged latent cache, and requests leave the batch (freeing their blocks at
// once) as soon as they stop. One step thread; callers never block on steps.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/model/deepseek_model.h"
#include "common/runtime/generator.h"
#include "common/runtime/latent_kv_pool.h"
#include "common/runtime/sampler.h"
#include "common/transport/kv_transport.h"
#include "common/transport/step_group.h"

namespace xpd::runtime {

struct DecodeStart {
  int64_t prompt_tokens = 0;  // positions already in the cache
  SampledToken first_token;   // sampled by prefill; counts toward max_tokens
  int64_t max_tokens = 1;
  SamplingParams sampling;  // the sampler resumes after prefill's one draw
  bool ignore_eos = false;
  std::vector<int32_t> stop_token_ids;
};

// What the step thread reports for one request, in order: tokens as they
// are produced (starting with the prefill-sampled first token), then exactly
// one final update (finish reason, or an error such as CANCELLED).
struct DecodeUpdate {
  std::vector<SampledToken> tokens;
  std::optional<FinishReason> finished;
  absl::Status error;  // non-OK on the final update when the request failed
};

struct DecodeSchedulerOptions {
  int32_t max_running = 256;  // requests decoded per step at most
  // The expert-parallel group this rank steps with (not owned; outlives the
  // scheduler). Every step opens with the group's header exchange, and the
  // step thread also runs steps with no requests of its own when a peer does.
  transport::StepGroup* group = nullptr;
};

struct DecodeStats {
  int64_t kv_blocks_total = 0;
  int64_t kv_blocks_free = 0;
  int32_t running = 0;
  int32_t waiting = 0;  // holding a reservation, not in the running batch
  int64_t steps = 0;
  int64_t idle_steps = 0;  // EP steps this rank ran only for its peers' tokens
};

class DecodeScheduler : public transport::KvSink {
 public:
  DecodeScheduler(const model::DeepSeekModel& model, LatentKvPool& pool,
                  DecodeSchedulerOptions options = {});
  ~DecodeScheduler() override;  // stops the step thread; pending requests get CANCELLED

  // RESOURCE_EXHAUSTED when the pool cannot hold prompt + max_tokens;
  // ALREADY_EXISTS for a duplicate id; INVALID_ARGUMENT past the context.
  absl::Status Reserve(const std::string& id, int64_t prompt_tokens, int64_t max_tokens);
  void Release(const std::string& id);  // frees a reservation not started

  absl::Status WriteKv(const std::string& id, int64_t first_token, int64_t count,
                       int32_t num_layers, int32_t latent_dim,
                       std::span<const float> rows) override;
  absl::Status CompleteKv(const std::string& id, int64_t num_tokens) override;

  // FAILED_PRECONDITION until the KV is complete; NOT_FOUND without a
  // reservation. `on_update` runs on the step thread and must not block.
  absl::Status Start(const std::string& id, const DecodeStart& start,
                     std::function<void(const DecodeUpdate&)> on_update);
  // Frees the request's blocks; its callback gets a final CANCELLED update.
  void Cancel(const std::string& id);

  DecodeStats stats() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace xpd::runtime
