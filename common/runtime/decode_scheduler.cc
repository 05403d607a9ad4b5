// DecodeScheduler's public calls: reservations, KV intake (KvSink), Start,
// Cancel and stats. The step thread is in decode_scheduler_loop.cc; the
// shared state and the threading rules are in decode_scheduler_state.h.
#include "common/runtime/decode_scheduler.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/runtime/decode_scheduler_state.h"

namespace xpd::runtime {

absl::Status DecodeScheduler::State::CheckReservation(const std::string& id, int64_t prompt_tokens,
                                                      int64_t max_tokens) const {
  if (prompt_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("request ", id, ": prompt_tokens must be >= 1, got ", prompt_tokens));
  }
  if (max_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("request ", id, ": max_tokens must be >= 1, got ", max_tokens));
  }
  const int64_t context = model.config().max_position_embeddings;
  if (prompt_tokens > context || max_tokens > context - prompt_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("request ", id, ": prompt_tokens + max_tokens = ", prompt_tokens + max_tokens,
                     " exceeds the context of ", context));
  }
  return absl::OkStatus();
}

DecodeScheduler::State::Request* DecodeScheduler::State::Find(const std::string& id) {
  auto it = requests.find(id);
  return it == requests.end() ? nullptr : it->second.get();
}

absl::Status DecodeScheduler::State::ValidateStart(const Request& r,
                                                   const DecodeStart& start) const {
  if (r.started) return absl::FailedPreconditionError(absl::StrCat(r.id, ": already started"));
  if (!r.kv_complete) {
    return absl::FailedPreconditionError(absl::StrCat(r.id, ": KV transfer not complete (",
                                                      r.rows_written, " of ", r.prompt_tokens,
                                                      " positions)"));
  }
  if (start.prompt_tokens != r.prompt_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(r.id, ": prompt_tokens ", start.prompt_tokens,
                                                   " differs from the reservation's ",
                                                   r.prompt_tokens));
  }
  if (start.max_tokens < 1 || start.max_tokens > r.max_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(r.id, ": max_tokens must be in [1, ",
                                                   r.max_tokens, "], got ", start.max_tokens));
  }
  const int64_t vocab = model.config().vocab_size;
  if (start.first_token.token < 0 || start.first_token.token >= vocab) {
    return absl::InvalidArgumentError(absl::StrCat(r.id, ": first_token ", start.first_token.token,
                                                   " outside vocabulary [0, ", vocab, ")"));
  }
  return ValidateSamplingParams(start.sampling);
}

DecodeScheduler::DecodeScheduler(const model::DeepSeekModel& model, LatentKvPool& pool,
                                 DecodeSchedulerOptions options)
    : state_(std::make_unique<State>(model, pool, options)) {
  if (options.group != nullptr) {
    options.group->set_wake([s = state_.get()] {
      absl::MutexLock lock(&s->mu);
      s->work.Signal();
    });
  }
  state_->thread = std::thread([s = state_.get()] { s->Loop(); });
}

DecodeScheduler::~DecodeScheduler() {
  {
    absl::MutexLock lock(&state_->mu);
    state_->stopping = true;
    state_->work.Signal();
  }
  state_->thread.join();
  if (state_->options.group != nullptr) state_->options.group->set_wake(nullptr);
  // The step thread cancelled every started request; free what is left.
  absl::MutexLock lock(&state_->mu);
  for (auto& [id, r] : state_->requests) state_->pool.Free(r->blocks);
  state_->requests.clear();
}

absl::Status DecodeScheduler::Reserve(const std::string& id, int64_t prompt_tokens,
                                      int64_t max_tokens) {
  XPD_RETURN_IF_ERROR(state_->CheckReservation(id, prompt_tokens, max_tokens));
  absl::MutexLock lock(&state_->mu);
  if (state_->requests.contains(id)) {
    return absl::AlreadyExistsError(absl::StrCat("request ", id, " already has a reservation"));
  }
  auto r = std::make_unique<State::Request>();
  r->id = id;
  r->prompt_tokens = prompt_tokens;
  r->max_tokens = max_tokens;
  r->written.assign(prompt_tokens, false);
  // Like Generator: blocks for every position the request can reach.
  const absl::Status reserved = state_->pool.Reserve(prompt_tokens + max_tokens, &r->blocks);
  if (!reserved.ok()) {  // the pool's message says blocks needed and free
    return absl::Status(reserved.code(), absl::StrCat("request ", id, ": ", reserved.message()));
  }
  state_->requests.emplace(id, std::move(r));
  return absl::OkStatus();
}

void DecodeScheduler::Release(const std::string& id) {
  absl::MutexLock lock(&state_->mu);
  auto it = state_->requests.find(id);
  if (it == state_->requests.end() || it->second->started) return;  // started: use Cancel
  state_->pool.Free(it->second->blocks);
  state_->requests.erase(it);
}

absl::Status DecodeScheduler::WriteKv(const std::string& id, int64_t first_token, int64_t count,
                                      int32_t num_layers, int32_t latent_dim,
                                      std::span<const float> rows) {
  const kernels::PagedLatentCache& cache = state_->pool.cache();
  // Layers past num_layers (an MTP layer the sender does not compute) stay
  // absent; the main stack must be complete.
  const int32_t min_layers = static_cast<int32_t>(state_->model.config().num_hidden_layers);
  if (num_layers < min_layers || num_layers > cache.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("request ", id, ": num_layers ", num_layers,
                                                   " must be in [", min_layers, ", ",
                                                   cache.num_layers, "]"));
  }
  if (latent_dim != cache.latent_dim) {
    return absl::InvalidArgumentError(absl::StrCat("request ", id, ": latent_dim ", latent_dim,
                                                   " differs from the cache's ", cache.latent_dim));
  }
  if (count < 0 || static_cast<int64_t>(rows.size()) != int64_t{num_layers} * count * latent_dim) {
    return absl::InvalidArgumentError(absl::StrCat("request ", id, ": ", rows.size(),
                                                   " floats for ", count, " tokens of ", num_layers,
                                                   " layers x ", latent_dim));
  }
  // The copy runs under the lock: chunks are bounded by the transport, and it
  // keeps the blocks from being freed (Release, Cancel) while being written.
  absl::MutexLock lock(&state_->mu);
  State::Request* r = state_->Find(id);
  if (r == nullptr) return absl::NotFoundError(absl::StrCat("no reservation for request ", id));
  if (r->kv_complete) {
    return absl::FailedPreconditionError(absl::StrCat("request ", id, ": KV already complete"));
  }
  if (first_token < 0 || first_token > r->prompt_tokens - count) {
    return absl::InvalidArgumentError(
        absl::StrCat("request ", id, ": tokens [", first_token, ", ", first_token + count,
                     ") outside the reserved [0, ", r->prompt_tokens, ")"));
  }
  for (int32_t layer = 0; layer < num_layers; ++layer) {
    for (int64_t t = 0; t < count; ++t) {
      const float* src = &rows[(int64_t{layer} * count + t) * latent_dim];
      std::memcpy(cache.Row(r->blocks.data(), layer, first_token + t), src,
                  sizeof(float) * latent_dim);
    }
  }
  for (int64_t t = first_token; t < first_token + count; ++t) {
    if (!r->written[t]) ++r->rows_written;
    r->written[t] = true;
  }
  return absl::OkStatus();
}

absl::Status DecodeScheduler::CompleteKv(const std::string& id, int64_t num_tokens) {
  absl::MutexLock lock(&state_->mu);
  State::Request* r = state_->Find(id);
  if (r == nullptr) return absl::NotFoundError(absl::StrCat("no reservation for request ", id));
  if (num_tokens != r->prompt_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request ", id, ": ", num_tokens, " tokens completed, reserved ", r->prompt_tokens));
  }
  if (r->rows_written != r->prompt_tokens) {
    return absl::FailedPreconditionError(absl::StrCat("request ", id, ": only ", r->rows_written,
                                                      " of ", r->prompt_tokens,
                                                      " positions received"));
  }
  r->kv_complete = true;
  return absl::OkStatus();
}

absl::Status DecodeScheduler::Start(const std::string& id, const DecodeStart& start,
                                    std::function<void(const DecodeUpdate&)> on_update) {
  if (!on_update) return absl::InvalidArgumentError(absl::StrCat(id, ": no update callback"));
  absl::MutexLock lock(&state_->mu);
  State::Request* r = state_->Find(id);
  if (r == nullptr) return absl::NotFoundError(absl::StrCat("no reservation for request ", id));
  XPD_RETURN_IF_ERROR(state_->ValidateStart(*r, start));
  r->started = true;
  r->start = start;
  r->on_update = std::move(on_update);
  // Prefill drew the first token from the same seeded stream.
  r->sampler.emplace(start.sampling);
  r->sampler->SkipSamples(1);
  state_->waiting.push_back(r);
  state_->work.Signal();
  return absl::OkStatus();
}

void DecodeScheduler::Cancel(const std::string& id) {
  absl::MutexLock lock(&state_->mu);
  auto it = state_->requests.find(id);
  if (it == state_->requests.end()) return;
  State::Request* r = it->second.get();
  if (!r->started) {  // nobody to notify: free at once
    state_->pool.Free(r->blocks);
    state_->requests.erase(it);
    return;
  }
  // The step thread owns started requests: it drops this one at the next
  // step boundary (right away when idle), frees it and reports CANCELLED.
  r->cancelled = true;
  state_->work.Signal();
}

DecodeStats DecodeScheduler::stats() const {
  absl::MutexLock lock(&state_->mu);
  DecodeStats s;
  s.kv_blocks_total = state_->pool.num_blocks();
  s.kv_blocks_free = state_->pool.num_free_blocks();
  s.running = static_cast<int32_t>(state_->running.size());
  // Holding a reservation but not decoding: not yet started, or started and
  // waiting for a slot.
  s.waiting = static_cast<int32_t>(state_->requests.size() - state_->running.size());
  s.steps = state_->steps;
  s.idle_steps = state_->idle_steps;
  return s;
}

}  // namespace xpd::runtime
