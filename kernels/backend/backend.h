// The one interface the model calls for compute. The reference backend runs
// the plain single-threaded kernels (the oracle in tests); the CPU backend
// runs the SIMD kernels chosen from CPU features on a thread pool. A CUDA
// backend implements the same calls on device buffers.
#pragma once

#include <memory>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "kernels/attention/mla_attention.h"
#include "kernels/matmul/matmul.h"
#include "kernels/moe_routing/moe_routing.h"
#include "kernels/ops/elementwise.h"

namespace xpd::kernels {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;  // e.g. "cpu(avx512bf16, 2 threads)"
  virtual int num_threads() const = 0;

  virtual absl::Status MatMul(const MatMulArgs& args) = 0;
  // Independent products run as one unit of parallel work (the per-head MLA
  // projections, the experts of one MoE layer): the same results as calling
  // MatMul on each, without a fork-join per small product.
  virtual absl::Status MatMulGroup(std::span<const MatMulArgs> problems) = 0;
  virtual absl::Status RmsNorm(const RmsNormArgs& args) = 0;
  virtual absl::Status ApplyRope(const RopeArgs& args) = 0;
  virtual absl::Status SiluMul(const SiluMulArgs& args) = 0;
  virtual absl::Status RoundToBf16(const RoundToBf16Args& args) = 0;
  virtual absl::Status MoeRouting(const MoeRoutingArgs& args) = 0;
  virtual absl::Status LatentAttention(const LatentAttentionArgs& args) = 0;
  virtual absl::Status MhaAttention(const MhaAttentionArgs& args) = 0;
};

std::unique_ptr<Backend> MakeReferenceBackend();
// num_threads <= 0 means one per available core.
std::unique_ptr<Backend> MakeCpuBackend(int num_threads);

}  // namespace xpd::kernels
