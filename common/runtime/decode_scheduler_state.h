// Internal to DecodeScheduler: its state, shared by decode_scheduler.cc (the
// public calls: reservations, KV intake, Start/Cancel, stats) and
// decode_scheduler_loop.cc (the step thread). Not an API.
//
// Threading: one mutex guards the request table and the queues; the step
// thread holds it only at step boundaries (admitting, retiring, counting),
// never during Forward or sampling, so Reserve/WriteKv/Start/Cancel/stats
// never wait for a step. Callbacks run on the step thread with the mutex
// released, so they may call back into the scheduler (Start, Cancel, stats).
//
// Ownership: only the step thread removes a started request, so the request
// objects it reads outside the lock (sampler, token count, block table) stay
// valid for the whole step; other threads only flag them (`cancelled`).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "common/runtime/decode_scheduler.h"

namespace xpd::runtime {

struct DecodeScheduler::State {
  struct Request {
    std::string id;
    int64_t prompt_tokens = 0;
    int64_t max_tokens = 0;  // reserved for
    std::vector<int32_t> blocks;
    std::vector<bool> written;  // per prompt position: rows arrived
    int64_t rows_written = 0;
    bool kv_complete = false;
    bool started = false;
    bool cancelled = false;
    // Set by Start; afterwards touched by the step thread only.
    DecodeStart start;
    std::function<void(const DecodeUpdate&)> on_update;
    std::optional<Sampler> sampler;
    int64_t generated = 0;  // tokens so far, the first token included
    int32_t last_token = 0;
  };

  // Updates collected under the lock and delivered after releasing it.
  // `retired` keeps finished requests alive until their final update is out.
  struct Deliveries {
    std::vector<std::pair<Request*, DecodeUpdate>> updates;
    std::vector<std::unique_ptr<Request>> retired;
  };

  State(const model::DeepSeekModel& m, LatentKvPool& p, DecodeSchedulerOptions o)
      : model(m), pool(p), options(o) {}

  absl::Status CheckReservation(const std::string& id, int64_t prompt_tokens,
                                int64_t max_tokens) const;
  Request* Find(const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  absl::Status ValidateStart(const Request& r, const DecodeStart& start) const;
  std::optional<FinishReason> StopReason(const Request& r, int32_t token) const;

  void Loop();
  // An EP peer opened the next step (or this rank must announce an epoch).
  bool GroupWantsStep() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  // At a step boundary: drops cancelled requests, admits waiting ones.
  void PrepareStepLocked(Deliveries& out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  // Forward + sampling for `batch`, outside the lock; tokens[i] for batch[i].
  absl::Status RunStep(const std::vector<Request*>& batch, std::vector<SampledToken>& tokens);
  void FinishStepLocked(const std::vector<Request*>& batch, const absl::Status& status,
                        std::vector<SampledToken>& tokens, Deliveries& out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  // Frees the request's blocks and queues its final update.
  void RetireLocked(Request* r, DecodeUpdate final_update, Deliveries& out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  void CancelAllLocked(Deliveries& out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  static void Deliver(Deliveries& out);

  const model::DeepSeekModel& model;
  LatentKvPool& pool;
  const DecodeSchedulerOptions options;

  mutable absl::Mutex mu;
  absl::CondVar work;  // signalled on Start, Cancel of a started request and stop
  std::map<std::string, std::unique_ptr<Request>> requests ABSL_GUARDED_BY(mu);
  std::deque<Request*> waiting ABSL_GUARDED_BY(mu);  // started, not yet running (FIFO)
  std::vector<Request*> running ABSL_GUARDED_BY(mu);
  bool stopping ABSL_GUARDED_BY(mu) = false;
  int64_t steps ABSL_GUARDED_BY(mu) = 0;
  int64_t idle_steps ABSL_GUARDED_BY(mu) = 0;  // EP steps run only for the peers
  model::ForwardOutput output;                 // step thread only; reused across steps
  std::thread thread;
};

}  // namespace xpd::runtime
