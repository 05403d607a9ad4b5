#include "common/base/memory_bandwidth.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

namespace xpd::base {

double MeasureTriadBandwidth(int threads, int64_t bytes_per_array, int repeats) {
  threads = std::max(1, threads);
  const int64_t n = bytes_per_array / static_cast<int64_t>(sizeof(float));
  std::unique_ptr<float[]> a(new float[n]), b(new float[n]), c(new float[n]);
  auto for_each_chunk = [&](auto fn) {
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] { fn(n * t / threads, n * (t + 1) / threads); });
    }
    for (std::thread& w : workers) w.join();
  };
  // First touch from the same threads that run the triad (NUMA placement).
  for_each_chunk([&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) a[i] = 0.0f, b[i] = 1.0f, c[i] = 2.0f;
  });
  double best = 0.0;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    for_each_chunk([&](int64_t begin, int64_t end) {
      float* __restrict out = a.get();
      const float* __restrict x = b.get();
      const float* __restrict y = c.get();
      for (int64_t i = begin; i < end; ++i) out[i] = x[i] + 3.0f * y[i];
    });
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, 3.0 * static_cast<double>(bytes_per_array) / seconds);
  }
  volatile float sink = a[n / 2];
  (void)sink;
  return best;
}

int64_t PeakRssBytes() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;
}

}  // namespace xpd::base
