// Fork-join worker pool for kernels. Workers spin briefly before sleeping so
// that the many short parallel regions of a decode step do not pay a futex
// wake-up each; the calling thread always takes part in the work.
#pragma once

#include <cstdint>
#include <functional>

namespace xpd::kernels {

class ThreadPool {
 public:
  // num_threads counts the caller: 1 means no worker threads at all.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Splits [0, n) into at most num_threads() contiguous chunks of at least
  // `grain` items and runs fn(begin, end) on each; returns when all are done.
  // Chunk boundaries depend only on n, grain and num_threads().
  // Not reentrant: fn must not call ParallelFor on the same pool.
  void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

  // Like ParallelFor, but [0, n) is cut into n / grain chunks (at least one)
  // that threads claim one by one, in order: a thread that runs slower, or
  // draws costlier items, takes fewer, so uneven items or unevenly fast cores
  // (a busy neighbour on a shared host) still finish together. Chunk
  // boundaries depend only on n and grain (a one-thread pool runs fn once
  // over [0, n)); which thread runs a chunk does not.
  void ParallelForDynamic(int64_t n, int64_t grain,
                          const std::function<void(int64_t, int64_t)>& fn);

 private:
  struct State;
  void RunRegion(int64_t n, int64_t chunks, const std::function<void(int64_t, int64_t)>& fn);

  int num_threads_;
  State* state_;
};

}  // namespace xpd::kernels
