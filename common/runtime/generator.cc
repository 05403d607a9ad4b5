#include "common/runtime/generator.h"

#include <algorithm>
#include <chrono>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"

namespace xpd::runtime {
namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

struct Running {
  const GenerateRequest* request;
  std::vector<int32_t> blocks;
  Sampler sampler;
  GenerateResult result;
  int64_t length = 0;  // tokens in the cache
  bool done = false;
};

}  // namespace

absl::StatusOr<std::vector<GenerateResult>> Generator::Generate(
    const std::vector<GenerateRequest>& requests, GenerateTimings* timings) {
  const model::ModelConfig& config = model_.config();
  std::vector<Running> running;
  running.reserve(requests.size());
  absl::Cleanup free_blocks = [&] {
    for (Running& r : running) pool_.Free(r.blocks);
  };
  for (size_t i = 0; i < requests.size(); ++i) {
    const GenerateRequest& request = requests[i];
    if (request.prompt.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("request ", i, ": empty prompt"));
    }
    if (request.max_tokens < 1) {
      return absl::InvalidArgumentError(absl::StrCat("request ", i, ": max_tokens must be >= 1"));
    }
    const int64_t total = static_cast<int64_t>(request.prompt.size()) + request.max_tokens;
    if (total > config.max_position_embeddings) {
      return absl::InvalidArgumentError(
          absl::StrCat("request ", i, ": prompt + max_tokens = ", total, " exceeds the context of ",
                       config.max_position_embeddings));
    }
    XPD_RETURN_IF_ERROR(ValidateSamplingParams(request.sampling));
    running.push_back(
        {.request = &request, .blocks = {}, .sampler = Sampler(request.sampling), .result = {}});
    XPD_RETURN_IF_ERROR(pool_.Reserve(total, &running.back().blocks));
  }

  auto accept = [&](Running& r, const float* logits) {
    const SampledToken token = r.sampler.Sample(std::span<const float>(logits, config.vocab_size));
    r.result.tokens.push_back(token.token);
    r.result.logprobs.push_back(token.logprob);
    const auto& stops = r.request->stop_token_ids;
    if ((!r.request->ignore_eos && token.token == config.eos_token_id) ||
        std::find(stops.begin(), stops.end(), token.token) != stops.end()) {
      r.result.finish_reason = FinishReason::kStop;
      r.done = true;
    } else if (static_cast<int64_t>(r.result.tokens.size()) >= r.request->max_tokens) {
      r.done = true;
    }
  };

  // Prefill every prompt in one batch; the last position gives the first token.
  auto start = std::chrono::steady_clock::now();
  model::ForwardBatch prefill;
  for (Running& r : running) {
    prefill.sequences.push_back({.tokens = r.request->prompt, .start = 0, .block_table = r.blocks});
    r.length = static_cast<int64_t>(r.request->prompt.size());
  }
  model::ForwardOutput output;
  XPD_RETURN_IF_ERROR(model_.Forward(prefill, pool_.cache(), &output));
  for (size_t i = 0; i < running.size(); ++i) {
    accept(running[i], &output.logits[output.first_row[i] * config.vocab_size]);
  }
  if (timings != nullptr) {
    timings->prefill_seconds += Seconds(start);
    for (const Running& r : running) timings->prefill_tokens += r.length;
  }

  // Decode: every unfinished sequence advances one token per step.
  start = std::chrono::steady_clock::now();
  while (true) {
    model::ForwardBatch step;
    std::vector<Running*> members;
    for (Running& r : running) {
      if (r.done) continue;
      step.sequences.push_back({.tokens = std::span<const int32_t>(&r.result.tokens.back(), 1),
                                .start = r.length,
                                .block_table = r.blocks});
      members.push_back(&r);
    }
    if (members.empty()) break;
    XPD_RETURN_IF_ERROR(model_.Forward(step, pool_.cache(), &output));
    for (size_t i = 0; i < members.size(); ++i) {
      members[i]->length += 1;
      accept(*members[i], &output.logits[output.first_row[i] * config.vocab_size]);
    }
    if (timings != nullptr) {
      timings->decode_tokens += static_cast<int64_t>(members.size());
      timings->decode_steps += 1;
    }
  }
  if (timings != nullptr) timings->decode_seconds += Seconds(start);

  std::vector<GenerateResult> results;
  for (Running& r : running) results.push_back(std::move(r.result));
  return results;
}

}  // namespace xpd::runtime
