// Sampling cost per token over DeepSeek-V3's full vocabulary, per mode.
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "common/runtime/sampler.h"

namespace {

constexpr int kVocab = 129280;

std::vector<float> RandomLogits() {
  std::mt19937 rng(21);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  std::vector<float> logits(kVocab);
  for (float& x : logits) x = dist(rng);
  return logits;
}

void BM_Sample(benchmark::State& state) {
  const std::vector<float> logits = RandomLogits();
  xpd::runtime::SamplingParams params;
  params.temperature = state.range(0) / 10.0f;
  params.top_k = static_cast<int32_t>(state.range(1));
  params.top_p = state.range(2) / 100.0f;
  params.num_top_logprobs = static_cast<int32_t>(state.range(3));
  xpd::runtime::Sampler sampler(params);
  for (auto _ : state) benchmark::DoNotOptimize(sampler.Sample(logits));
  state.SetItemsProcessed(state.iterations());
}
// {temperature x10, top_k, top_p x100, top logprobs}
BENCHMARK(BM_Sample)
    ->Args({0, 0, 100, 0})
    ->Args({10, 0, 100, 0})
    ->Args({7, 50, 100, 0})
    ->Args({7, 0, 95, 0})
    ->Args({10, 5000, 100, 0})
    ->Args({7, 50, 95, 20});

}  // namespace

BENCHMARK_MAIN();
