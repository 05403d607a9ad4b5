#include "kernels/backend/backend.h"

#include <algorithm>
#include <mutex>
#include <thread>

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
  absl::Status RmsNorm(const RmsNormArgs& args) override { return kernels::RmsNorm(args); }
  absl::Status ApplyRope(const RopeArgs& args) override { return kernels::ApplyRope(args); }
  absl::Status SiluMul(const SiluMulArgs& args) override { return kernels::SiluMul(args); }
  absl::Status MoeRouting(const MoeRoutingArgs& args) override { return MoeRoutingCpu(args); }
  absl::Status LatentAttention(const LatentAttentionArgs& args) override {
    return kernels::LatentAttention(args, nullptr);
  }
  absl::Status MhaAttention(const MhaAttentionArgs& args) override {
    return kernels::MhaAttention(args, nullptr);
  }
};

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int num_threads) : pool_(num_threads) {}
  std::string name() const override {
    return absl::StrCat("cpu(", GetCpuFeatures().Describe(), ", ", pool_.num_threads(),
                        " threads)");
  }
  int num_threads() const override { return pool_.num_threads(); }
  absl::Status MatMul(const MatMulArgs& args) override { return MatMulCpu(args, pool_); }
  absl::Status RmsNorm(const RmsNormArgs& args) override {
    return SplitRows(args.rows, args, [](RmsNormArgs part, int64_t begin, int64_t end) {
      const int64_t xs = part.x_stride ? part.x_stride : part.dim;
      const int64_t ys = part.y_stride ? part.y_stride : part.dim;
      part.x += begin * xs, part.y += begin * ys, part.rows = end - begin;
      part.x_stride = xs, part.y_stride = ys;
      return kernels::RmsNorm(part);
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
  absl::Status MoeRouting(const MoeRoutingArgs& args) override { return MoeRoutingCpu(args); }
  absl::Status LatentAttention(const LatentAttentionArgs& args) override {
    return kernels::LatentAttention(args, &pool_);
  }
  absl::Status MhaAttention(const MhaAttentionArgs& args) override {
    return MhaAttentionGemm(args, pool_);
  }

 private:
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

}  // namespace

std::unique_ptr<Backend> MakeReferenceBackend() { return std::make_unique<ReferenceBackend>(); }

std::unique_ptr<Backend> MakeCpuBackend(int num_threads) {
  if (num_threads <= 0) num_threads = std::max(1u, std::thread::hardware_concurrency());
  return std::make_unique<CpuBackend>(num_threads);
}

}  // namespace xpd::kernels
