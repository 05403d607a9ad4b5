#include "kernels/core/weight_matrix.h"

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
    case DType::kF8E4M3:
      return F8E4M3ToF32(static_cast<const uint8_t*>(data)[index]) *
             block_scales[(r / block_rows) * scale_cols() + c / block_cols];
  }
  return 0.0f;
}

}  // namespace xpd::kernels
