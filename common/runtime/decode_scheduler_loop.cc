// The DecodeScheduler step thread: continuous batching over the paged
// latent cache (design notes in decode_scheduler_state.h).
//
// Updates: a request's first token (sampled by prefill) is reported in its
// first update when it joins the batch, so the update stream carries every
// generated token; the update carrying the last token also carries the
// finish reason.
#include <algorithm>
#include <span>

#include "common/base/status_macros.h"
#include "common/runtime/decode_scheduler_state.h"

namespace xpd::runtime {
namespace {

absl::Status Cancelled() { return absl::CancelledError("request cancelled"); }

}  // namespace

// The stop rules of Generator: EOS unless ignored, stop ids, then length
// (`generated` already counts `token`).
std::optional<FinishReason> DecodeScheduler::State::StopReason(const Request& r,
                                                               int32_t token) const {
  const auto& stops = r.start.stop_token_ids;
  if ((!r.start.ignore_eos && token == model.config().eos_token_id) ||
      std::find(stops.begin(), stops.end(), token) != stops.end()) {
    return FinishReason::kStop;
  }
  if (r.generated >= r.start.max_tokens) return FinishReason::kLength;
  return std::nullopt;
}

void DecodeScheduler::State::Loop() {
  std::vector<Request*> batch;
  std::vector<SampledToken> tokens;
  bool stop = false;
  while (!stop) {
    Deliveries boundary;
    {
      absl::MutexLock lock(&mu);
      while (!stopping && waiting.empty() && running.empty() && !GroupWantsStep()) {
        work.Wait(&mu);
      }
      stop = stopping;
      if (stop) {
        CancelAllLocked(boundary);
      } else {
        PrepareStepLocked(boundary);
      }
      batch = running;
    }
    Deliver(boundary);
    if (stop) break;
    absl::Status status;
    if (options.group != nullptr) {
      // Every rank joins every step; without requests of its own this rank
      // still serves its experts to the peers' tokens.
      absl::StatusOr<transport::StepPlan> plan = options.group->BeginStep(!batch.empty());
      if (!plan.ok()) {
        status = plan.status();
      } else if (batch.empty() && plan->any_work) {
        status = model.IdleStep();
      }
      if (batch.empty()) {
        absl::MutexLock lock(&mu);
        ++idle_steps;
        continue;
      }
    }
    if (batch.empty()) continue;
    if (status.ok()) status = RunStep(batch, tokens);
    Deliveries after;
    {
      absl::MutexLock lock(&mu);
      FinishStepLocked(batch, status, tokens, after);
    }
    Deliver(after);
  }
}

bool DecodeScheduler::State::GroupWantsStep() {
  return options.group != nullptr && options.group->StepRequested();
}

void DecodeScheduler::State::PrepareStepLocked(Deliveries& out) {
  // Cancelled requests leave before the step, running or still waiting.
  std::vector<Request*> kept_running;
  for (Request* r : running) {
    if (r->cancelled) {
      RetireLocked(r, {.error = Cancelled()}, out);
    } else {
      kept_running.push_back(r);
    }
  }
  running = std::move(kept_running);
  // Admission in start order, up to max_running. A request whose first
  // token already ends it needs no slot: it finishes here, without a step.
  const size_t capacity = static_cast<size_t>(std::max(options.max_running, 1));
  std::deque<Request*> kept_waiting;
  for (Request* r : waiting) {
    if (r->cancelled) {
      RetireLocked(r, {.error = Cancelled()}, out);
      continue;
    }
    r->generated = 1;
    r->last_token = r->start.first_token.token;
    DecodeUpdate update{.tokens = {r->start.first_token}};
    update.finished = StopReason(*r, r->last_token);
    if (update.finished.has_value()) {
      RetireLocked(r, std::move(update), out);
    } else if (running.size() < capacity) {
      running.push_back(r);
      out.updates.emplace_back(r, std::move(update));
    } else {
      kept_waiting.push_back(r);
    }
  }
  waiting = std::move(kept_waiting);
}

absl::Status DecodeScheduler::State::RunStep(const std::vector<Request*>& batch,
                                             std::vector<SampledToken>& tokens) {
  // The last token of each request sits at position prompt + generated - 1;
  // its latent row is written there and its logits give the next token.
  model::ForwardBatch step;
  step.sequences.reserve(batch.size());
  for (Request* r : batch) {
    step.sequences.push_back({.tokens = std::span<const int32_t>(&r->last_token, 1),
                              .start = r->prompt_tokens + r->generated - 1,
                              .block_table = r->blocks,
                              .logits = model::LogitsRows::kLast});
  }
  XPD_RETURN_IF_ERROR(model.Forward(step, pool.cache(), &output));
  const int64_t vocab = model.config().vocab_size;
  tokens.clear();
  for (size_t i = 0; i < batch.size(); ++i) {
    const float* logits = &output.logits[output.first_row[i] * vocab];
    tokens.push_back(batch[i]->sampler->Sample(std::span<const float>(logits, vocab)));
  }
  return absl::OkStatus();
}

void DecodeScheduler::State::FinishStepLocked(const std::vector<Request*>& batch,
                                              const absl::Status& status,
                                              std::vector<SampledToken>& tokens, Deliveries& out) {
  ++steps;
  std::vector<Request*> still_running;
  for (size_t i = 0; i < batch.size(); ++i) {
    Request* r = batch[i];
    if (r->cancelled || !status.ok()) {  // the step's token, if any, is dropped
      RetireLocked(r, {.error = r->cancelled ? Cancelled() : status}, out);
      continue;
    }
    r->generated += 1;
    r->last_token = tokens[i].token;
    DecodeUpdate update{.tokens = {std::move(tokens[i])}};
    update.finished = StopReason(*r, r->last_token);
    if (update.finished.has_value()) {
      RetireLocked(r, std::move(update), out);
    } else {
      still_running.push_back(r);
      out.updates.emplace_back(r, std::move(update));
    }
  }
  running = std::move(still_running);
}

void DecodeScheduler::State::RetireLocked(Request* r, DecodeUpdate final_update, Deliveries& out) {
  // Blocks go back before the final update is delivered, so a caller that
  // sees the end of a request also sees its KV freed.
  pool.Free(r->blocks);
  r->blocks.clear();
  auto it = requests.find(r->id);
  out.retired.push_back(std::move(it->second));
  requests.erase(it);
  out.updates.emplace_back(r, std::move(final_update));
}

void DecodeScheduler::State::CancelAllLocked(Deliveries& out) {
  for (Request* r : running) RetireLocked(r, {.error = Cancelled()}, out);
  running.clear();
  for (Request* r : waiting) RetireLocked(r, {.error = Cancelled()}, out);
  waiting.clear();
}

void DecodeScheduler::State::Deliver(Deliveries& out) {
  for (auto& [request, update] : out.updates) request->on_update(update);
  out.updates.clear();
  out.retired.clear();
}

}  // namespace xpd::runtime
