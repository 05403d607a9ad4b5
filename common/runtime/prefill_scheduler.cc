// PrefillScheduler: a queue of prompts computed in chunks by one step thread.
//
// Step packing: requests are taken in queue order, each contributing up to
// the budget left in the step (max_step_tokens), from the position where its
// previous chunk stopped. A request that got only part of its remaining
// prompt moves to the back of the queue, so a long prompt shares the steps
// with the requests behind it instead of holding the budget until it is done.
// A request's blocks are reserved when it first gets a chunk; if the pool
// cannot hold it, it and every request behind it that has no blocks yet wait
// (first come, first admitted: a large prompt is not starved by small ones).
// The pool belongs to the scheduler, so blocks only come back when one of its
// own requests finishes, and the loop re-plans after every step.
//
// Threading: one mutex guards the queue; the step thread holds it only to
// plan and to retire a step, never during Forward, sampling or the KV export.
// `done` runs on the step thread without the lock held.
#include "common/runtime/prefill_scheduler.h"

#include <algorithm>
#include <cstring>
#include <list>
#include <optional>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/base/status_macros.h"

namespace xpd::runtime {

struct PrefillScheduler::State {
  struct Job {
    std::string id;
    std::vector<int32_t> prompt;
    SamplingParams sampling;
    std::function<void(absl::StatusOr<PrefillResult>)> done;
    std::vector<int32_t> blocks;  // empty until admitted
    int64_t computed = 0;         // prompt positions already in the cache
    bool cancelled = false;
  };
  using Queue = std::list<std::unique_ptr<Job>>;

  // One request's part of a step.
  struct Chunk {
    Queue::iterator job;
    int64_t count = 0;
    bool last = false;                    // the prompt's final chunk
    absl::Status error;                   // the step failed
    std::optional<PrefillResult> result;  // last chunks of a successful step
  };

  // Jobs that left the queue and the outcome their `done` gets, delivered
  // after the lock is released.
  using Completions = std::vector<std::pair<std::unique_ptr<Job>, absl::StatusOr<PrefillResult>>>;

  State(const model::DeepSeekModel& m, LatentKvPool& p, PrefillSchedulerOptions o)
      : model(m), pool(p), options(o) {}

  absl::Status Validate(const std::vector<int32_t>& prompt, const SamplingParams& sampling) const;

  void Loop();
  std::vector<Chunk> PlanStepLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  void RunStep(std::vector<Chunk>& chunks);
  PrefillResult Export(const Job& job, SampledToken first_token) const;
  void FinishStepLocked(std::vector<Chunk>& chunks, Completions& out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  void RetireLocked(Queue::iterator it, absl::StatusOr<PrefillResult> outcome, Completions& out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  // Retires cancelled jobs that are not in a step (all of them when `all`).
  void SweepLocked(bool all, Completions& out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);

  const model::DeepSeekModel& model;
  LatentKvPool& pool;
  const PrefillSchedulerOptions options;

  mutable absl::Mutex mu;
  absl::CondVar work;  // signalled on Submit, Cancel and stop
  Queue queue ABSL_GUARDED_BY(mu);
  bool stopping ABSL_GUARDED_BY(mu) = false;
  int64_t steps ABSL_GUARDED_BY(mu) = 0;
  model::ForwardOutput output;  // step thread only; reused across steps
  std::thread thread;
};

absl::Status PrefillScheduler::State::Validate(const std::vector<int32_t>& prompt,
                                               const SamplingParams& sampling) const {
  const model::ModelConfig& config = model.config();
  if (prompt.empty()) return absl::InvalidArgumentError("prompt is empty");
  // The first generated token needs a position too.
  if (static_cast<int64_t>(prompt.size()) >= config.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("prompt of ", prompt.size(),
                                                   " tokens leaves no room in the context of ",
                                                   config.max_position_embeddings));
  }
  for (size_t i = 0; i < prompt.size(); ++i) {
    if (prompt[i] < 0 || prompt[i] >= config.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt[", i, "] = ", prompt[i], " outside vocabulary [0, ", config.vocab_size, ")"));
    }
  }
  XPD_RETURN_IF_ERROR(ValidateSamplingParams(sampling));
  const int64_t blocks = LatentKvPool::BlocksFor(prompt.size(), pool.block_size());
  if (blocks > pool.num_blocks()) {  // would wait forever
    return absl::ResourceExhaustedError(
        absl::StrCat("prompt needs ", blocks, " KV blocks; the pool has ", pool.num_blocks()));
  }
  return absl::OkStatus();
}

void PrefillScheduler::State::Loop() {
  bool stop = false;
  while (!stop) {
    Completions completed;
    std::vector<Chunk> chunks;
    {
      absl::MutexLock lock(&mu);
      // Sleep until there is something to compute or to report. Planning and
      // waiting share the critical section, so no Submit/Cancel is missed.
      while (true) {
        stop = stopping;
        SweepLocked(stop, completed);
        if (stop) break;
        chunks = PlanStepLocked();
        if (!chunks.empty() || !completed.empty()) break;
        work.Wait(&mu);
      }
    }
    for (auto& [job, outcome] : completed) job->done(std::move(outcome));
    if (chunks.empty()) continue;
    RunStep(chunks);
    completed.clear();
    {
      absl::MutexLock lock(&mu);
      FinishStepLocked(chunks, completed);
    }
    for (auto& [job, outcome] : completed) job->done(std::move(outcome));
  }
}

std::vector<PrefillScheduler::State::Chunk> PrefillScheduler::State::PlanStepLocked() {
  std::vector<Chunk> chunks;
  int64_t budget = std::max<int64_t>(options.max_step_tokens, 1);
  bool admitting = true;  // false once a request did not fit the pool
  for (auto it = queue.begin(); it != queue.end() && budget > 0; ++it) {
    Job& job = **it;
    if (job.blocks.empty()) {
      if (!admitting) continue;
      if (!pool.Reserve(static_cast<int64_t>(job.prompt.size()), &job.blocks).ok()) {
        admitting = false;  // waits for blocks; later arrivals wait behind it
        continue;
      }
    }
    const int64_t remaining = static_cast<int64_t>(job.prompt.size()) - job.computed;
    const int64_t count = std::min(remaining, budget);
    budget -= count;
    chunks.push_back({.job = it, .count = count, .last = count == remaining});
  }
  return chunks;
}

void PrefillScheduler::State::RunStep(std::vector<Chunk>& chunks) {
  model::ForwardBatch step;
  step.sequences.reserve(chunks.size());
  for (const Chunk& c : chunks) {
    const Job& job = **c.job;
    step.sequences.push_back(
        {.tokens = std::span<const int32_t>(job.prompt).subspan(job.computed, c.count),
         .start = job.computed,
         .block_table = job.blocks,
         .logits = c.last ? model::LogitsRows::kLast : model::LogitsRows::kNone});
  }
  const absl::Status status = model.Forward(step, pool.cache(), &output);
  const int64_t vocab = model.config().vocab_size;
  for (size_t i = 0; i < chunks.size(); ++i) {
    Chunk& c = chunks[i];
    if (!status.ok()) {
      c.error = status;
    } else if (c.last) {
      // A fresh sampler: the first token is the request's first draw, as in
      // Generator; decode resumes the stream with SkipSamples(1).
      const float* logits = &output.logits[output.first_row[i] * vocab];
      Sampler sampler((*c.job)->sampling);
      c.result = Export(**c.job, sampler.Sample(std::span<const float>(logits, vocab)));
    }
  }
}

PrefillResult PrefillScheduler::State::Export(const Job& job, SampledToken first_token) const {
  // The main stack's layers only: Forward writes no MTP layer, and the
  // decode side accepts fewer layers than its cache holds.
  const kernels::PagedLatentCache& cache = pool.cache();
  PrefillResult result;
  result.first_token = std::move(first_token);
  result.num_layers = static_cast<int32_t>(model.config().num_hidden_layers);
  result.latent_dim = cache.latent_dim;
  result.num_tokens = static_cast<int64_t>(job.prompt.size());
  result.kv.resize(int64_t{result.num_layers} * result.num_tokens * result.latent_dim);
  float* out = result.kv.data();
  for (int32_t layer = 0; layer < result.num_layers; ++layer) {
    for (int64_t t = 0; t < result.num_tokens; ++t, out += result.latent_dim) {
      std::memcpy(out, cache.Row(job.blocks.data(), layer, t), sizeof(float) * result.latent_dim);
    }
  }
  return result;
}

void PrefillScheduler::State::FinishStepLocked(std::vector<Chunk>& chunks, Completions& out) {
  ++steps;
  std::vector<Queue::iterator> partial;
  for (Chunk& c : chunks) {
    Job& job = **c.job;
    if (job.cancelled) {
      RetireLocked(c.job, absl::CancelledError("request cancelled"), out);
    } else if (!c.error.ok()) {  // the step failed: every request in it fails
      RetireLocked(c.job, c.error, out);
    } else if (c.last) {
      RetireLocked(c.job, std::move(*c.result), out);
    } else {
      job.computed += c.count;
      partial.push_back(c.job);
    }
  }
  // Partly computed requests go behind the others (see the top).
  for (Queue::iterator it : partial) queue.splice(queue.end(), queue, it);
}

void PrefillScheduler::State::RetireLocked(Queue::iterator it,
                                           absl::StatusOr<PrefillResult> outcome,
                                           Completions& out) {
  // Blocks go back first: the KV has been exported, or is not wanted.
  pool.Free((*it)->blocks);
  (*it)->blocks.clear();
  out.emplace_back(std::move(*it), std::move(outcome));
  queue.erase(it);
}

void PrefillScheduler::State::SweepLocked(bool all, Completions& out) {
  for (auto it = queue.begin(); it != queue.end();) {
    auto next = std::next(it);
    if (all || (*it)->cancelled) RetireLocked(it, absl::CancelledError("request cancelled"), out);
    it = next;
  }
}

PrefillScheduler::PrefillScheduler(const model::DeepSeekModel& model, LatentKvPool& pool,
                                   PrefillSchedulerOptions options)
    : state_(std::make_unique<State>(model, pool, options)) {
  state_->thread = std::thread([s = state_.get()] { s->Loop(); });
}

PrefillScheduler::~PrefillScheduler() {
  {
    absl::MutexLock lock(&state_->mu);
    state_->stopping = true;
    state_->work.Signal();
  }
  state_->thread.join();  // the step thread cancels what is queued on its way out
}

// Rejections (INVALID_ARGUMENT, ALREADY_EXISTS, RESOURCE_EXHAUSTED) are only
// returned: `done` is not called for a request that was never accepted, so
// a caller handles each outcome exactly once.
absl::Status PrefillScheduler::Submit(const std::string& id, std::vector<int32_t> prompt,
                                      const SamplingParams& sampling,
                                      std::function<void(absl::StatusOr<PrefillResult>)> done) {
  if (!done) return absl::InvalidArgumentError(absl::StrCat("request ", id, ": no callback"));
  if (absl::Status s = state_->Validate(prompt, sampling); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("request ", id, ": ", s.message()));
  }
  absl::MutexLock lock(&state_->mu);
  if (static_cast<int64_t>(state_->queue.size()) >= state_->options.max_queued) {
    return absl::ResourceExhaustedError(absl::StrCat("request ", id, ": prefill queue full (",
                                                     state_->options.max_queued, " requests)"));
  }
  for (const auto& job : state_->queue) {
    if (job->id == id) {
      return absl::AlreadyExistsError(absl::StrCat("request ", id, " is already queued"));
    }
  }
  auto job = std::make_unique<State::Job>();
  job->id = id;
  job->prompt = std::move(prompt);
  job->sampling = sampling;
  job->done = std::move(done);
  state_->queue.push_back(std::move(job));
  state_->work.Signal();
  return absl::OkStatus();
}

void PrefillScheduler::Cancel(const std::string& id) {
  // The step thread retires the job at the next step boundary (right away
  // when idle): it may be part of the step now running.
  absl::MutexLock lock(&state_->mu);
  for (const auto& job : state_->queue) {
    if (job->id == id) {
      job->cancelled = true;
      state_->work.Signal();
      return;
    }
  }
}

PrefillStats PrefillScheduler::stats() const {
  absl::MutexLock lock(&state_->mu);
  PrefillStats s;
  s.queued = static_cast<int32_t>(state_->queue.size());
  for (const auto& job : state_->queue) {
    s.outstanding_tokens += static_cast<int64_t>(job->prompt.size()) - job->computed;
  }
  s.steps = state_->steps;
  return s;
}

}  // namespace xpd::runtime
