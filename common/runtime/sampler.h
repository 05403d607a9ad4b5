// Token sampling for one sequence: greedy, temperature, top-k, top-p, seeded
// and reproducible, with the log-probability of the chosen token.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace xpd::runtime {

struct SamplingParams {
  float temperature = 1.0f;      // 0 = greedy (argmax, lowest id on ties)
  int32_t top_k = 0;             // 0 = no limit
  float top_p = 1.0f;            // (0, 1]; 1 = no limit
  uint64_t seed = 0;             // same seed + same logits sequence = same tokens
  int32_t num_top_logprobs = 0;  // also report this many most likely tokens (0..20)
};

// Checks ranges; errors name the field ("temperature must be in [0, 100], got -1").
absl::Status ValidateSamplingParams(const SamplingParams& params);

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
};

struct SampledToken {
  int32_t token = 0;
  // log softmax(logits)[token] of the model's raw distribution (temperature 1,
  // before top-k/top-p), as OpenAI-compatible servers report it.
  float logprob = 0.0f;
  std::vector<TokenLogprob> top_logprobs;  // num_top_logprobs entries, most likely first
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);  // params must be valid
  // logits: f32 [vocab]. Deterministic given the seed and the call sequence.
  SampledToken Sample(std::span<const float> logits);
  // Advances the random stream as `samples` non-greedy Sample calls would, so
  // a request whose first token was sampled elsewhere (prefill rank) resumes
  // with the same sequence as the single-process engine.
  void SkipSamples(int64_t samples);

 private:
  double NextUniform();  // [0, 1)
  SamplingParams params_;
  uint64_t rng_state_;
  std::vector<int32_t> order_;  // scratch
  std::vector<float> probs_;    // scratch
};

}  // namespace xpd::runtime
