// Argument validation and the scalar reference every optimized path is tested against.

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/matmul/matmul.h"

namespace xpd::kernels {

absl::Status ValidateMatMulArgs(const MatMulArgs& args) {
  if (args.w == nullptr) return absl::InvalidArgumentError("MatMul: w is null");
  const WeightMatrix& w = *args.w;
  if (args.m < 0) return absl::InvalidArgumentError(absl::StrCat("MatMul: m = ", args.m, " < 0"));
  if (w.rows < 0 || w.cols < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("MatMul: weight shape [", w.rows, ", ", w.cols, "] is negative"));
  }
  if (w.data == nullptr && w.rows > 0 && w.cols > 0) {
    return absl::InvalidArgumentError("MatMul: weight data is null");
  }
  if (args.m > 0 && args.x == nullptr) return absl::InvalidArgumentError("MatMul: x is null");
  if (args.m > 0 && args.y == nullptr) return absl::InvalidArgumentError("MatMul: y is null");
  if (args.x_stride != 0 && args.x_stride < w.cols) {
    return absl::InvalidArgumentError(
        absl::StrCat("MatMul: x_stride ", args.x_stride, " < k = ", w.cols));
  }
  if (args.y_stride != 0 && args.y_stride < w.rows) {
    return absl::InvalidArgumentError(
        absl::StrCat("MatMul: y_stride ", args.y_stride, " < n = ", w.rows));
  }
  const DType packed_dtype = w.layout == WeightLayout::kBf16Tiles32 ? DType::kBF16
                             : w.layout == WeightLayout::kF8Tiles32 ? DType::kF8E4M3
                                                                    : DType::kF32;
  if (IsPacked(w.layout) && w.dtype != packed_dtype) {
    return absl::InvalidArgumentError(
        absl::StrCat("MatMul: packed tiles need ", std::string(DTypeName(packed_dtype)),
                     " weights, got ", std::string(DTypeName(w.dtype))));
  }
  if (w.dtype == DType::kF8E4M3) {
    if (w.block_scales == nullptr) {
      return absl::InvalidArgumentError("MatMul: F8_E4M3 weight without block_scales");
    }
    if (w.block_rows <= 0 || w.block_cols <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("MatMul: F8_E4M3 block size ", w.block_rows,
                                                     "x", w.block_cols, " is not positive"));
    }
  }
  if (args.precision == Precision::kBF16 && w.dtype != DType::kBF16 &&
      w.layout != WeightLayout::kF8Tiles32) {
    return absl::InvalidArgumentError(
        absl::StrCat("MatMul: kBF16 precision needs BF16 or packed F8_E4M3 weights, got ",
                     std::string(DTypeName(w.dtype))));
  }
  return absl::OkStatus();
}

// Accumulates in double so the oracle is more accurate than any f32 summation
// order the optimized kernels may pick; the tolerance then only has to cover them.
absl::Status MatMulReference(const MatMulArgs& args) {
  if (absl::Status s = ValidateMatMulArgs(args); !s.ok()) return s;
  const WeightMatrix& w = *args.w;
  const int64_t k = w.cols, n = w.rows;
  const int64_t x_stride = args.x_stride ? args.x_stride : k;
  const int64_t y_stride = args.y_stride ? args.y_stride : n;
  for (int64_t i = 0; i < args.m; ++i) {
    const float* x = args.x + i * x_stride;
    float* y = args.y + i * y_stride;
    for (int64_t j = 0; j < n; ++j) {
      double sum = 0.0;
      for (int64_t c = 0; c < k; ++c) {
        const float xv = args.precision == Precision::kBF16 ? RoundToBf16(x[c]) : x[c];
        sum += static_cast<double>(xv) * static_cast<double>(w.At(j, c));
      }
      const float r = static_cast<float>(sum);
      y[j] = args.output == OutputMode::kAccumulate ? y[j] + r : r;
    }
  }
  return absl::OkStatus();
}

}  // namespace xpd::kernels
