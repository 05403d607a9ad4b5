#include "kernels/backend/backend.h"

#include <algorithm>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/attention/mha_attention_gemm.h"
#include "kernels/core/cpu_features.h"

namespace xpd::kernels {
namespace {

class ReferenceBackend final : public Backend {
 public:
  std::string name() const override { return "reference"; }
  int num_threads() const override { return 1; }
  absl::Status MatMul(const MatMulArgs& args) override { return MatMulReference(args); }
  absl::Status MatMulGroup(std::span<const MatMulArgs> problems) override {
    for (const MatMulArgs& args : problems) {
      if (absl::Status s = MatMulReference(args); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  absl::Status RmsNorm(const RmsNormArgs& args) override { return kernels::RmsNorm(args); }
  absl::Status ApplyRope(const RopeArgs& args) override { return kernels::ApplyRope(args); }
  absl::Status SiluMul(const SiluMulArgs& args) override { return kernels::SiluMul(args); }
  absl::Status RoundToBf16(const RoundToBf16Args& args) override {
    return kernels::RoundToBf16Rows(args);
  }
  absl::Status MoeRouting(const MoeRoutingArgs& args) override { return MoeRoutingCpu(args); }
  absl::Status LatentAttention(const LatentAttentionArgs& args) override {
    return kernels::LatentAttention(args, nullptr);
  }
  absl::Status MhaAttention(const MhaAttentionArgs& args) override {
    return kernels::MhaAttention(args, nullptr);
  }
};

// Rows [begin, end) of a row-wise op whose x and y have row strides (0: dim).
template <typename Args>
Args RowRange(Args part, int64_t begin, int64_t end) {
  const int64_t xs = part.x_stride ? part.x_stride : part.dim;
  const int64_t ys = part.y_stride ? part.y_stride : part.dim;
  part.x += begin * xs, part.y += begin * ys, part.rows = end - begin;
  part.x_stride = xs, part.y_stride = ys;
  return part;
}

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int num_threads) : pool_(num_threads) {}
  std::string name() const override {
    return absl::StrCat("cpu(", GetCpuFeatures().Describe(), ", ", pool_.num_threads(),
                        " threads)");
  }
  int num_threads() const override { return pool_.num_threads(); }
  absl::Status MatMul(const MatMulArgs& args) override { return MatMulCpu(args, pool_); }
  absl::Status MatMulGroup(std::span<const MatMulArgs> problems) override;
  absl::Status RmsNorm(const RmsNormArgs& args) override {
    return SplitRows(args.rows, args, [](const RmsNormArgs& all, int64_t begin, int64_t end) {
      return kernels::RmsNorm(RowRange(all, begin, end));
    });
  }
  absl::Status ApplyRope(const RopeArgs& args) override { return kernels::ApplyRope(args); }
  absl::Status SiluMul(const SiluMulArgs& args) override {
    return SplitRows(args.rows, args, [](SiluMulArgs part, int64_t begin, int64_t end) {
      part.gate += begin * part.in_stride, part.up += begin * part.in_stride;
      part.out += begin * part.out_stride, part.rows = end - begin;
      return kernels::SiluMul(part);
    });
  }
  absl::Status RoundToBf16(const RoundToBf16Args& args) override {
    return SplitRows(args.rows, args, [](const RoundToBf16Args& all, int64_t begin, int64_t end) {
      return kernels::RoundToBf16Rows(RowRange(all, begin, end));
    });
  }
  absl::Status MoeRouting(const MoeRoutingArgs& args) override { return MoeRoutingCpu(args); }
  absl::Status LatentAttention(const LatentAttentionArgs& args) override {
    return kernels::LatentAttention(args, &pool_);
  }
  absl::Status MhaAttention(const MhaAttentionArgs& args) override {
    return MhaAttentionGemm(args, pool_);
  }

 private:
  absl::Status RunWholeProducts(std::span<const MatMulArgs> problems);
  // Row-parallel ops: rows are independent, so splitting never changes results.
  template <typename Args, typename Fn>
  absl::Status SplitRows(int64_t rows, const Args& args, Fn fn) {
    if (rows < 8 || pool_.num_threads() == 1) return fn(args, 0, rows);
    std::mutex mutex;
    absl::Status first_error;
    pool_.ParallelFor(rows, 4, [&](int64_t begin, int64_t end) {
      absl::Status status = fn(args, begin, end);
      if (status.ok()) return;
      std::lock_guard<std::mutex> lock(mutex);
      if (first_error.ok()) first_error = std::move(status);
    });
    return first_error;
  }

  ThreadPool pool_;
};

// Many large products (prefill's routed experts: ~48 rows each, 128 per
// layer) run whole, each on one thread, in one parallel region: free threads
// claim them largest first, so the split stays even when products differ in
// size or one core runs slower than the other. A few large products split
// each over the pool.
absl::Status CpuBackend::RunWholeProducts(std::span<const MatMulArgs> problems) {
  const int threads = pool_.num_threads();
  if (problems.size() < static_cast<size_t>(2 * threads)) {
    for (const MatMulArgs& args : problems) {
      if (absl::Status s = MatMulCpu(args, pool_); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  auto macs = [&](size_t i) { return problems[i].m * problems[i].w->rows * problems[i].w->cols; };
  std::vector<size_t> order(problems.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return macs(a) > macs(b); });
  std::mutex mutex;
  absl::Status first_error;
  pool_.ParallelForDynamic(static_cast<int64_t>(order.size()), 1, [&](int64_t begin, int64_t end) {
    thread_local ThreadPool solo(1);
    for (int64_t i = begin; i < end; ++i) {
      absl::Status status = MatMulCpu(problems[order[i]], solo);
      if (status.ok()) continue;
      std::lock_guard<std::mutex> lock(mutex);
      if (first_error.ok()) first_error = std::move(status);
    }
  });
  return first_error;
}

// Splits every product's output columns (weight rows) into slices and runs
// all slices of all products in one parallel region, each slice on a
// single-thread pool. Large products (prefill) run whole (RunWholeProducts).
absl::Status CpuBackend::MatMulGroup(std::span<const MatMulArgs> problems) {
  constexpr int64_t kSmallRows = 32;       // decode-sized products are grouped
  constexpr int64_t kSliceMacs = 1 << 17;  // enough work to amortize a slice
  bool all_small = pool_.num_threads() > 1;
  for (const MatMulArgs& args : problems) {
    if (absl::Status s = ValidateMatMulArgs(args); !s.ok()) return s;
    all_small = all_small && args.m <= kSmallRows;
  }
  if (!all_small) return RunWholeProducts(problems);
  std::vector<MatMulArgs> slices;
  std::vector<WeightMatrix> slice_weights;
  slice_weights.reserve(problems.size() * 16);
  for (const MatMulArgs& args : problems) {
    const WeightMatrix& w = *args.w;
    // Slices start on a packed tile or an FP8 scale block; others on any row.
    const int64_t align = IsPacked(w.layout)          ? kPackedTileRows
                          : w.dtype == DType::kF8E4M3 ? w.block_rows
                                                      : 8;
    const int64_t macs_per_row = std::max<int64_t>(1, args.m * w.cols);
    int64_t rows = std::max<int64_t>(align, kSliceMacs / macs_per_row / align * align);
    for (int64_t r0 = 0; r0 < w.rows; r0 += rows) {
      const int64_t count = std::min(rows, w.rows - r0);
      slice_weights.push_back(w.RowSlice(r0, count));
      MatMulArgs slice = args;
      slice.y = args.y + r0;
      slice.y_stride = args.y_stride ? args.y_stride : w.rows;
      slices.push_back(slice);
    }
  }
  for (size_t i = 0; i < slices.size(); ++i) slices[i].w = &slice_weights[i];
  std::mutex mutex;
  absl::Status first_error;
  pool_.ParallelFor(static_cast<int64_t>(slices.size()), 1, [&](int64_t begin, int64_t end) {
    thread_local ThreadPool solo(1);
    for (int64_t i = begin; i < end; ++i) {
      absl::Status status = MatMulCpu(slices[i], solo);
      if (status.ok()) continue;
      std::lock_guard<std::mutex> lock(mutex);
      if (first_error.ok()) first_error = std::move(status);
    }
  });
  return first_error;
}

}  // namespace

std::unique_ptr<Backend> MakeReferenceBackend() { return std::make_unique<ReferenceBackend>(); }

std::unique_ptr<Backend> MakeCpuBackend(int num_threads) {
  if (num_threads <= 0) num_threads = std::max(1u, std::thread::hardware_concurrency());
  return std::make_unique<CpuBackend>(num_threads);
}

}  // namespace xpd::kernels
