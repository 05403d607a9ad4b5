// y = x * W^T for one linear layer: the GEMM (prefill) / GEMV (decode) that
// dominates DeepSeek-V3 compute. W is [n, k] as stored in checkpoints.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/core/thread_pool.h"
#include "kernels/core/weight_matrix.h"

namespace xpd::kernels {

enum class Precision : uint8_t {
  kF32,  // exact weights (BF16/FP8 widened to f32, FP8 times its block scale), f32 math
  // x rounded to BF16 (RNE) before multiplying; BF16 weights, or FP8 packed
  // as kF8Tiles32 (exact, as for kF32); f32 accumulation
  kBF16,
};

enum class OutputMode : uint8_t { kOverwrite, kAccumulate };  // y = ... or y += ...

struct MatMulArgs {
  const float* x = nullptr;         // [m, k] with row stride x_stride
  int64_t x_stride = 0;             // elements; 0 means k
  const WeightMatrix* w = nullptr;  // [n, k]
  float* y = nullptr;               // [m, n] with row stride y_stride
  int64_t y_stride = 0;             // elements; 0 means n
  int64_t m = 0;
  Precision precision = Precision::kF32;
  OutputMode output = OutputMode::kOverwrite;
  // kBF16 only: the caller guarantees every x value is already a bf16 value
  // (RoundToBf16Rows, SiluMulArgs::round_to_bf16), so rounding it again
  // would change nothing and is skipped. Lets one rounding serve several
  // products (gate and up, all experts a token goes to).
  bool x_is_bf16 = false;
};

absl::Status ValidateMatMulArgs(const MatMulArgs& args);

// Plain single-threaded loops; the oracle for every optimized path.
absl::Status MatMulReference(const MatMulArgs& args);

// Optimized CPU path: SIMD chosen at run time (AVX2, AVX-512, AVX-512-BF16)
// and split over `pool`. Every y[i][j] is computed with the same sequence of
// operations whatever m, the row's position in x and the thread count are, so a
// sequence's results never depend on what else is in the batch.
absl::Status MatMulCpu(const MatMulArgs& args, ThreadPool& pool);

}  // namespace xpd::kernels
