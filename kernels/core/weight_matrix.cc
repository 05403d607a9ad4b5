#include "kernels/core/weight_matrix.h"

#include <cstddef>

namespace xpd::kernels {

float WeightMatrix::At(int64_t r, int64_t c) const {
  int64_t index = r * cols + c;
  if (IsPacked(layout)) {
    const int64_t tile = r / kPackedTileRows, row = r % kPackedTileRows;
    index = (tile * cols + c) * kPackedTileRows + PackedLane(layout, row);
  }
  switch (dtype) {
    case DType::kF32:
      return static_cast<const float*>(data)[index];
    case DType::kBF16:
      return Bf16ToF32(static_cast<const uint16_t*>(data)[index]);
    case DType::kF8E4M3: {
      const float scale =
          layout == WeightLayout::kF8Tiles32
              ? block_scales[((r / kPackedTileRows) * scale_cols() + c / block_cols) *
                                 kPackedTileRows +
                             r % kPackedTileRows]
              : block_scales[(r / block_rows) * scale_cols() + c / block_cols];
      return F8E4M3ToF32(static_cast<const uint8_t*>(data)[index]) * scale;
    }
  }
  return 0.0f;
}

WeightMatrix WeightMatrix::RowSlice(int64_t first, int64_t count) const {
  WeightMatrix part = *this;
  part.rows = count;
  part.data = static_cast<const std::byte*>(data) + first * cols * DTypeSize(dtype);
  if (dtype == DType::kF8E4M3) {
    part.block_scales = layout == WeightLayout::kF8Tiles32
                            ? block_scales + first * scale_cols()
                            : block_scales + (first / block_rows) * scale_cols();
  }
  return part;
}

int64_t PackedF8CodeBytes(const WeightMatrix& w) {
  const int64_t tiles = (w.rows + kPackedTileRows - 1) / kPackedTileRows;
  return (tiles * kPackedTileRows * w.cols + 63) / 64 * 64;
}

int64_t StoredBytes(const WeightMatrix& w) {
  if (w.layout == WeightLayout::kF8Tiles32) {
    const int64_t tiles = (w.rows + kPackedTileRows - 1) / kPackedTileRows;
    return PackedF8CodeBytes(w) + tiles * w.scale_cols() * kPackedTileRows * 4;
  }
  const int64_t rows = IsPacked(w.layout)
                           ? (w.rows + kPackedTileRows - 1) / kPackedTileRows * kPackedTileRows
                           : w.rows;
  int64_t bytes = rows * w.cols * DTypeSize(w.dtype);
  if (w.dtype == DType::kF8E4M3) {
    bytes += (w.rows + w.block_rows - 1) / w.block_rows * w.scale_cols() * 4;
  }
  return bytes;
}

}  // namespace xpd::kernels
