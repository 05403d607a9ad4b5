// Single-process generation: prefill a set of prompts together, then decode
// one token per running sequence per step until each stops. The CLI, the
// benchmarks and the reference tests drive the model through it.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/deepseek_model.h"
#include "common/runtime/latent_kv_pool.h"
#include "common/runtime/sampler.h"

namespace xpd::runtime {

struct GenerateRequest {
  std::vector<int32_t> prompt;
  int64_t max_tokens = 16;
  SamplingParams sampling;
  bool ignore_eos = false;
  std::vector<int32_t> stop_token_ids;
};

enum class FinishReason : uint8_t { kLength, kStop };

struct GenerateResult {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;  // of each generated token
  FinishReason finish_reason = FinishReason::kLength;
};

// Wall-clock split of one Generate call, for benchmarks.
struct GenerateTimings {
  double prefill_seconds = 0;
  double decode_seconds = 0;
  int64_t prefill_tokens = 0;
  int64_t decode_tokens = 0;  // tokens produced by decode steps (not the first token)
  int64_t decode_steps = 0;
};

class Generator {
 public:
  Generator(const model::DeepSeekModel& model, LatentKvPool& pool) : model_(model), pool_(pool) {}

  // Validates every request first (prompt tokens, max_tokens, sampling) and
  // reserves KV blocks for prompt + max_tokens; blocks are freed on return.
  absl::StatusOr<std::vector<GenerateResult>> Generate(const std::vector<GenerateRequest>& requests,
                                                       GenerateTimings* timings = nullptr);

 private:
  const model::DeepSeekModel& model_;
  LatentKvPool& pool_;
};

}  // namespace xpd::runtime
