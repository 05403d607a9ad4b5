// MatMulCpu throughput on the `small` model preset's linear-layer shapes:
// decode GEMV (m = 1, 16; weights streamed from DRAM) and prefill GEMM
// (m = 512), plus STREAM-like bandwidth references. 2 threads unless
// XPD_BENCH_THREADS says otherwise; with XPD_BENCH_THREADS=1 the MatMul rates
// are per CPU-second of the one thread (kernel efficiency on a shared box).
//
//   matmul_bench [--benchmark_filter=...]    XPD_CPU_ISA=avx2 forces the AVX2 path
//   XPD_BENCH_COLD_MB (default 768): total size of the rotated weight copies for
//   decode, chosen above the LLC so GEMV reads DRAM like a real decode step.

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/core/cpu_features.h"
#include "kernels/core/dtype.h"
#include "kernels/core/thread_pool.h"
#include "kernels/matmul/matmul.h"
#include "kernels/matmul/matmul_internal.h"
#include "kernels/matmul/weight_packing.h"

namespace xpd::kernels {
namespace {

int Threads() {
  static const int threads = [] {
    const char* env = std::getenv("XPD_BENCH_THREADS");
    return env ? std::max(1, std::atoi(env)) : 2;
  }();
  return threads;
}

ThreadPool& Pool() {
  static ThreadPool pool(Threads());
  return pool;
}

int64_t ColdBytes() {
  const char* env = std::getenv("XPD_BENCH_COLD_MB");
  return (env ? std::atoll(env) : 768) << 20;
}

// Several copies of one weight matrix, cycled so that decode reads DRAM.
struct WeightSet {
  std::vector<uint8_t> bytes;  // copies back to back
  std::vector<float> scales;
  std::vector<WeightMatrix> views;
  int64_t matrix_bytes = 0;
};

std::unique_ptr<WeightSet> MakeWeightSet(DType dtype, bool packed, int64_t n, int64_t k,
                                         int copies) {
  auto set = std::make_unique<WeightSet>();
  set->matrix_bytes = n * k * DTypeSize(dtype);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<uint8_t> one(set->matrix_bytes);
  for (int64_t i = 0; i < n * k; ++i) {
    if (dtype == DType::kBF16) {
      const uint16_t h = F32ToBf16(normal(rng));
      std::memcpy(&one[i * 2], &h, 2);
    } else {
      one[i] = F32ToF8E4M3(normal(rng) * 64.0f);
    }
  }
  WeightMatrix w;
  w.dtype = dtype;
  w.rows = n;
  w.cols = k;
  w.data = one.data();
  if (dtype == DType::kF8E4M3) {
    set->scales.assign(((n + 127) / 128) * ((k + 127) / 128), 1.0f / 64);
    w.block_scales = set->scales.data();
  }
  // Packed FP8 keeps its scale lines behind its codes, in every copy.
  int64_t scales_offset = -1;
  if (packed) {  // what the model loader does with BF16 and FP8 weights
    absl::StatusOr<PackedWeight> p = PackTiles(w);
    if (!p.ok()) std::abort();
    w = p->matrix;
    set->matrix_bytes = StoredBytes(w);
    const auto* begin = static_cast<const uint8_t*>(w.data);
    one.assign(begin, begin + set->matrix_bytes);
    if (dtype == DType::kF8E4M3) {
      scales_offset = reinterpret_cast<const uint8_t*>(w.block_scales) - begin;
    }
  }
  set->bytes.resize(set->matrix_bytes * copies);
  for (int c = 0; c < copies; ++c) {
    std::memcpy(set->bytes.data() + c * set->matrix_bytes, one.data(), one.size());
  }
  for (int c = 0; c < copies; ++c) {
    uint8_t* copy = set->bytes.data() + c * set->matrix_bytes;
    w.data = copy;
    if (scales_offset >= 0) w.block_scales = reinterpret_cast<const float*>(copy + scales_offset);
    set->views.push_back(w);
  }
  return set;
}

using matmul_internal::Isa;

void BM_MatMul(benchmark::State& state, DType dtype, bool packed, Precision precision, Isa isa,
               int64_t m, int64_t k, int64_t n) {
  const int64_t matrix_bytes = n * k * DTypeSize(dtype);
  // Prefill reuses one copy (compute bound); decode rotates through copies.
  const int copies =
      m >= 64 ? 1 : static_cast<int>(std::max<int64_t>(1, ColdBytes() / matrix_bytes));
  const auto set = MakeWeightSet(dtype, packed, n, k, copies);
  std::vector<float> x(m * k), y(m * n);
  std::mt19937 rng(2);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& v : x) v = normal(rng);
  MatMulArgs args;
  args.x = x.data();
  args.y = y.data();
  args.m = m;
  args.precision = precision;
  int c = 0;
  for (auto _ : state) {
    args.w = &set->views[c];
    if (++c == copies) c = 0;
    if (!matmul_internal::MatMulCpuIsa(args, Pool(), isa).ok()) {
      state.SkipWithError("MatMulCpu failed");
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.counters["GB"] =
      benchmark::Counter(matrix_bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP"] =
      benchmark::Counter(2e-9 * m * n * k, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(matmul_internal::IsaName(std::min(isa, matmul_internal::DetectIsa())));
}

// STREAM triad a = b + s * c on 3 x 256 MiB (well above the LLC), 2 threads;
// bytes counted as in STREAM (3 arrays, no write-allocate traffic).
void BM_Triad(benchmark::State& state) {
  const int64_t n = int64_t{64} << 20;
  std::vector<float> a(n, 0.0f), b(n, 1.0f), c(n, 2.0f);
  const float s = 3.0f;
  auto run = [&] {
    Pool().ParallelFor(n, 1 << 16, [&](int64_t begin, int64_t end) {
      float* __restrict pa = a.data();
      const float* __restrict pb = b.data();
      const float* __restrict pc = c.data();
      for (int64_t i = begin; i < end; ++i) pa[i] = pb[i] + s * pc[i];
    });
  };
  run();  // first touch
  for (auto _ : state) {
    run();
    benchmark::ClobberMemory();
  }
  state.counters["GB"] = benchmark::Counter(3.0 * n * sizeof(float) * 1e-9,
                                            benchmark::Counter::kIsIterationInvariantRate);
}

// Read-only stream (sum of 768 MiB), the access pattern of a decode GEMV.
void BM_ReadSum(benchmark::State& state) {
  const int64_t n = int64_t{192} << 20;
  std::vector<float> a(n, 1.0f);
  std::vector<float> partial(Threads() * 16);
  for (auto _ : state) {
    Pool().ParallelFor(n, 1 << 16, [&](int64_t begin, int64_t end) {
      float acc[16] = {};
      for (int64_t i = begin; i + 16 <= end; i += 16) {
        for (int l = 0; l < 16; ++l) acc[l] += a[i + l];
      }
      const int slot = static_cast<int>(begin * Threads() / n);
      for (int l = 0; l < 16; ++l) partial[slot * 16 + l] += acc[l];
    });
    benchmark::DoNotOptimize(partial.data());
  }
  state.counters["GB"] =
      benchmark::Counter(n * sizeof(float) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void RegisterAll() {
  struct Shape {
    int64_t k, n;
  };
  const Shape shapes[] = {{1024, 2816}, {2816, 1024}, {1024, 8192}, {512, 1024}};
  struct Variant {
    const char* name;
    DType dtype;
    bool packed;
    Precision precision;
    Isa isa;
  };
  // BF16 and FP8 packed are what the model runs (weights packed at load); the
  // row-major BF16 rows are the baseline it is measured against in the same
  // run, plus kBF16 forced onto vdpbf16ps (row-major only) for comparison.
  const Isa def = matmul_internal::DefaultIsa();
  const Variant variants[] = {
      {"BF16packed_F32", DType::kBF16, true, Precision::kF32, def},
      {"BF16packed_BF16", DType::kBF16, true, Precision::kBF16, def},
      {"BF16w_F32", DType::kBF16, false, Precision::kF32, def},
      {"BF16w_BF16", DType::kBF16, false, Precision::kBF16, def},
      {"BF16w_BF16dot", DType::kBF16, false, Precision::kBF16, Isa::kAvx512Bf16},
      {"FP8packed_F32", DType::kF8E4M3, true, Precision::kF32, def},
      {"FP8packed_BF16", DType::kF8E4M3, true, Precision::kBF16, def},
      {"FP8w_F32", DType::kF8E4M3, false, Precision::kF32, def}};
  // Best-of-repetitions statistic: on a shared machine the fastest run is the
  // one least disturbed by other processes (use --benchmark_repetitions=N).
  auto max_of = [](const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); };
  auto min_of = [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); };
  // 48: the average rows per expert in a 512-token prefill of `small` (6 of 64).
  for (int64_t m : {1, 16, 48, 512}) {
    for (const Variant& v : variants) {
      if (v.isa == Isa::kAvx512Bf16 && matmul_internal::DetectIsa() != Isa::kAvx512Bf16) continue;
      for (const Shape& s : shapes) {
        const std::string name = std::string("MatMul/") + v.name + "/m:" + std::to_string(m) +
                                 "/k:" + std::to_string(s.k) + "/n:" + std::to_string(s.n);
        auto* b = benchmark::RegisterBenchmark(name.c_str(), BM_MatMul, v.dtype, v.packed,
                                               v.precision, v.isa, m, s.k, s.n);
        // One thread: rates over its CPU time, i.e. per-core kernel throughput
        // even when other processes share the cores.
        if (Threads() > 1) b->UseRealTime();
        b->Unit(benchmark::kMicrosecond)
            ->ComputeStatistics("max", max_of)
            ->ComputeStatistics("min", min_of);
      }
    }
  }
  benchmark::RegisterBenchmark("Triad", BM_Triad)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond)
      ->ComputeStatistics("max", max_of)
      ->ComputeStatistics("min", min_of);
  benchmark::RegisterBenchmark("ReadSum", BM_ReadSum)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond)
      ->ComputeStatistics("max", max_of)
      ->ComputeStatistics("min", min_of);
}

}  // namespace
}  // namespace xpd::kernels

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  xpd::kernels::RegisterAll();
  benchmark::AddCustomContext("cpu", xpd::kernels::GetCpuFeatures().Describe());
  benchmark::AddCustomContext("threads", std::to_string(xpd::kernels::Threads()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
