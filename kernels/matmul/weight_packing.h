// Packs weights into the tiles the matmul kernels stream (see WeightLayout in
// weight_matrix.h): BF16 weights once at load, so that decode reads each tile
// as one contiguous stream and prefill never re-lays-out W per call.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "kernels/core/weight_matrix.h"

namespace xpd::kernels {

struct PackedWeight {
  WeightMatrix matrix;                  // the packed view (same rows, cols, values)
  std::shared_ptr<const void> storage;  // owns matrix.data, 64-byte aligned
};

// `w` must be row-major. BF16 (-> kBf16Tiles32), F32 (-> kF32Tiles32) and
// F8_E4M3 with block scales (-> kF8Tiles32, scales as scale lines) keep
// their values exactly. FP8 holding a NaN code is rejected: no checkpoint
// quantizer writes one, and a NaN weight would poison every output it
// touches. The last tile's padding is zero.
absl::StatusOr<PackedWeight> PackTiles(const WeightMatrix& w);

}  // namespace xpd::kernels
