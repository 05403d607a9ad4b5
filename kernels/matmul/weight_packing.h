// Packs BF16 weights once, at load, into the layout the matmul kernels stream
// (WeightLayout::kBf16Tiles32, see weight_matrix.h): decode then reads each
// tile as one contiguous stream, and prefill never re-lays-out W per call.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "kernels/core/weight_matrix.h"

namespace xpd::kernels {

struct PackedWeight {
  WeightMatrix matrix;                  // the packed view (same rows, cols, values)
  std::shared_ptr<const void> storage;  // owns matrix.data, 64-byte aligned
};

// `w` must be a row-major BF16 matrix; every value is copied exactly, and the
// padding rows of the last tile are zero.
absl::StatusOr<PackedWeight> PackBf16Tiles(const WeightMatrix& w);

// Bytes the matrix occupies as stored (padding and block scales included).
int64_t StoredBytes(const WeightMatrix& w);

}  // namespace xpd::kernels
