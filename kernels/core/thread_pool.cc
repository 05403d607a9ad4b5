#include "kernels/core/thread_pool.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace xpd::kernels {
namespace {

// How long an idle worker polls for the next region before sleeping. A decode
// step issues regions every few microseconds, so polling for ~100 us avoids a
// futex wake-up (tens of microseconds) per region while idle pools still sleep.
constexpr auto kSpinDuration = std::chrono::microseconds(100);

inline bool IsLive(uint64_t generation) { return generation & 1; }

}  // namespace

// Protocol. `generation` is odd while a region runs and even otherwise. The
// caller publishes a region (fields, then an odd generation), runs chunks
// itself, waits for every chunk, closes the region (even generation) and then
// waits until no worker is inside it, so the fields are never rewritten while
// a late worker might still read them. Workers announce themselves in
// `active` before re-reading `generation` (both seq_cst): either the caller
// sees them, or they see the closed generation.
struct ThreadPool::State {
  std::vector<std::thread> workers;
  std::atomic<uint64_t> generation{0};
  std::atomic<bool> stop{false};
  std::atomic<int> active{0};
  std::atomic<int> sleepers{0};
  std::mutex sleep_mu;
  std::condition_variable sleep_cv;
  std::mutex caller_mu;  // serializes concurrent callers (not reentrancy)

  // The current region; written only while no worker is inside it.
  const std::function<void(int64_t, int64_t)>* fn = nullptr;
  int64_t n = 0;
  int64_t chunks = 0;
  std::atomic<int64_t> next_chunk{0};
  std::atomic<int64_t> chunks_done{0};

  void ChunkBounds(int64_t c, int64_t* begin, int64_t* end) const {
    const int64_t base = n / chunks, rem = n % chunks;
    *begin = c * base + std::min(c, rem);
    *end = *begin + base + (c < rem ? 1 : 0);
  }

  void RunChunks() {
    for (;;) {
      const int64_t c = next_chunk.fetch_add(1, std::memory_order_relaxed);
      if (c >= chunks) return;
      int64_t begin, end;
      ChunkBounds(c, &begin, &end);
      (*fn)(begin, end);
      chunks_done.fetch_add(1, std::memory_order_release);
    }
  }

  void WorkerLoop() {
    uint64_t seen = 0;
    for (;;) {
      // Poll, then sleep, until a live region we have not joined appears.
      auto wanted = [&] {
        // seq_cst: pairs with the caller's generation store / sleepers load.
        const uint64_t g = generation.load(std::memory_order_seq_cst);
        return stop.load(std::memory_order_relaxed) || (IsLive(g) && g != seen);
      };
      if (!wanted()) {
        const auto deadline = std::chrono::steady_clock::now() + kSpinDuration;
        bool found = false;
        while (!found) {
          for (int i = 0; i < 64 && !found; ++i) {
            _mm_pause();
            found = wanted();
          }
          if (!found && std::chrono::steady_clock::now() > deadline) break;
        }
        if (!found) {
          std::unique_lock<std::mutex> lock(sleep_mu);
          sleepers.fetch_add(1, std::memory_order_seq_cst);
          sleep_cv.wait(lock, wanted);
          sleepers.fetch_sub(1, std::memory_order_relaxed);
        }
      }
      if (stop.load(std::memory_order_relaxed)) return;
      active.fetch_add(1, std::memory_order_seq_cst);
      const uint64_t g = generation.load(std::memory_order_seq_cst);
      if (IsLive(g) && g != seen) {
        seen = g;
        RunChunks();
      }
      active.fetch_sub(1, std::memory_order_release);
    }
  }
};

ThreadPool::ThreadPool(int num_threads)
    : num_threads_(std::max(1, num_threads)), state_(new State) {
  state_->workers.reserve(num_threads_ - 1);
  for (int i = 1; i < num_threads_; ++i) {
    state_->workers.emplace_back([s = state_] { s->WorkerLoop(); });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(state_->sleep_mu);
    state_->stop.store(true);
  }
  state_->sleep_cv.notify_all();
  for (auto& t : state_->workers) t.join();
  delete state_;
}

void ThreadPool::ParallelFor(int64_t n, int64_t grain,
                             const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  RunRegion(n, std::clamp<int64_t>(n / std::max<int64_t>(1, grain), 1, num_threads_), fn);
}

void ThreadPool::ParallelForDynamic(int64_t n, int64_t grain,
                                    const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  const int64_t chunks =
      num_threads_ == 1 ? 1 : std::max<int64_t>(1, n / std::max<int64_t>(1, grain));
  RunRegion(n, chunks, fn);
}

void ThreadPool::RunRegion(int64_t n, int64_t chunks,
                           const std::function<void(int64_t, int64_t)>& fn) {
  if (chunks == 1) {
    fn(0, n);
    return;
  }
  State& s = *state_;
  std::lock_guard<std::mutex> caller_lock(s.caller_mu);
  s.fn = &fn;
  s.n = n;
  s.chunks = chunks;
  s.next_chunk.store(0, std::memory_order_relaxed);
  s.chunks_done.store(0, std::memory_order_relaxed);
  const uint64_t live = s.generation.load(std::memory_order_relaxed) + 1;
  s.generation.store(live, std::memory_order_seq_cst);
  if (s.sleepers.load(std::memory_order_seq_cst) > 0) {
    // Taking the mutex orders this notify after a sleeper's predicate check.
    { std::lock_guard<std::mutex> lock(s.sleep_mu); }
    s.sleep_cv.notify_all();
  }
  s.RunChunks();
  // Wait for chunks other threads took; yield if one of them was preempted
  // (the machine may be oversubscribed), but stay responsive otherwise.
  for (int spins = 0; s.chunks_done.load(std::memory_order_acquire) < chunks; ++spins) {
    if (spins < 20000) {
      _mm_pause();
    } else {
      std::this_thread::yield();
    }
  }
  s.generation.store(live + 1, std::memory_order_seq_cst);
  for (int spins = 0; s.active.load(std::memory_order_seq_cst) != 0; ++spins) {
    if (spins < 20000) {
      _mm_pause();
    } else {
      std::this_thread::yield();
    }
  }
}

}  // namespace xpd::kernels
