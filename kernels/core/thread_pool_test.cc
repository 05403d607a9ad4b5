#include "kernels/core/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace xpd::kernels {
namespace {

TEST(ThreadPoolTest, CoversRangeExactlyOnce) {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.num_threads(), threads);
    for (int64_t n : {0, 1, 2, 5, 7, 100, 1001}) {
      std::vector<std::atomic<int>> hits(n);
      pool.ParallelFor(n, 1, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) hits[i].fetch_add(1);
      });
      for (int64_t i = 0; i < n; ++i) EXPECT_EQ(hits[i].load(), 1) << "n=" << n << " i=" << i;
    }
  }
}

TEST(ThreadPoolTest, ChunkingIsDeterministicAndRespectsGrain) {
  ThreadPool pool(3);
  auto chunks_of = [&](int64_t n, int64_t grain) {
    std::mutex mu;
    std::vector<std::pair<int64_t, int64_t>> chunks;
    pool.ParallelFor(n, grain, [&](int64_t b, int64_t e) {
      std::lock_guard<std::mutex> lock(mu);
      chunks.emplace_back(b, e);
    });
    std::sort(chunks.begin(), chunks.end());
    return chunks;
  };
  using Chunks = std::vector<std::pair<int64_t, int64_t>>;
  EXPECT_EQ(chunks_of(10, 1), (Chunks{{0, 4}, {4, 7}, {7, 10}}));
  EXPECT_EQ(chunks_of(10, 4), (Chunks{{0, 5}, {5, 10}}));
  EXPECT_EQ(chunks_of(10, 100), (Chunks{{0, 10}}));
  for (int rep = 0; rep < 50; ++rep) EXPECT_EQ(chunks_of(1000, 7), chunks_of(1000, 7));
}

TEST(ThreadPoolTest, DynamicChunksCoverRangeExactlyOnce) {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 2, 5, 7, 100, 1001}) {
      for (int64_t grain : {1, 3}) {
        std::vector<std::atomic<int>> hits(n);
        pool.ParallelForDynamic(n, grain, [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) hits[i].fetch_add(1);
        });
        for (int64_t i = 0; i < n; ++i) EXPECT_EQ(hits[i].load(), 1) << "n=" << n << " i=" << i;
      }
    }
  }
}

TEST(ThreadPoolTest, DynamicChunksDependOnlyOnNAndGrain) {
  for (int threads : {2, 3}) {
    ThreadPool pool(threads);
    std::mutex mu;
    std::vector<std::pair<int64_t, int64_t>> chunks;
    pool.ParallelForDynamic(10, 3, [&](int64_t b, int64_t e) {
      std::lock_guard<std::mutex> lock(mu);
      chunks.emplace_back(b, e);
    });
    std::sort(chunks.begin(), chunks.end());
    using Chunks = std::vector<std::pair<int64_t, int64_t>>;
    EXPECT_EQ(chunks, (Chunks{{0, 4}, {4, 7}, {7, 10}})) << threads << " threads";
  }
}

// While one thread is held inside the first item, the others take every other
// item (a static split would leave half of them queued behind it).
TEST(ThreadPoolTest, DynamicChunksFlowAroundASlowItem) {
  ThreadPool pool(2);
  constexpr int64_t kItems = 10;
  std::atomic<int64_t> others_done{0};
  std::atomic<bool> saw_all{false};
  pool.ParallelForDynamic(kItems, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      if (i != 0) {
        others_done.fetch_add(1);
        continue;
      }
      // Bounded so that a regression fails instead of hanging.
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
      while (others_done.load() < kItems - 1 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::yield();
      }
      saw_all = others_done.load() == kItems - 1;
    }
  });
  EXPECT_TRUE(saw_all.load());
}

TEST(ThreadPoolTest, CallerParticipates) {
  ThreadPool pool(1);
  const auto caller = std::this_thread::get_id();
  bool ran_on_caller = false;
  pool.ParallelFor(10, 1,
                   [&](int64_t, int64_t) { ran_on_caller = std::this_thread::get_id() == caller; });
  EXPECT_TRUE(ran_on_caller);
}

TEST(ThreadPoolTest, ManyShortRegions) {
  ThreadPool pool(3);
  std::atomic<int64_t> sum{0};
  constexpr int kRegions = 20000;
  const auto start = std::chrono::steady_clock::now();
  for (int r = 0; r < kRegions; ++r) {
    pool.ParallelFor(3, 1, [&](int64_t b, int64_t e) { sum.fetch_add(e - b); });
  }
  const double us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(sum.load(), int64_t{3} * kRegions);
  // Informational: cost of one fork-join region (depends on machine load).
  std::printf("%.2f us per region\n", us / kRegions);
}

TEST(ThreadPoolTest, WorkersWakeAfterSleeping) {
  ThreadPool pool(3);
  for (int r = 0; r < 3; ++r) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // past the spin window
    std::atomic<int> count{0};
    pool.ParallelFor(300, 1, [&](int64_t b, int64_t e) { count.fetch_add(e - b); });
    EXPECT_EQ(count.load(), 300);
  }
}

TEST(ThreadPoolTest, ConcurrentCallersAreSerialized) {
  ThreadPool pool(2);
  std::atomic<int64_t> total{0};
  auto body = [&] {
    for (int r = 0; r < 2000; ++r) {
      pool.ParallelFor(8, 1, [&](int64_t b, int64_t e) { total.fetch_add(e - b); });
    }
  };
  std::thread a(body), b(body);
  a.join();
  b.join();
  EXPECT_EQ(total.load(), 2 * 2000 * 8);
}

}  // namespace
}  // namespace xpd::kernels
