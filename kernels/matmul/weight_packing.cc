#include "kernels/matmul/weight_packing.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace xpd::kernels {

absl::StatusOr<PackedWeight> PackBf16Tiles(const WeightMatrix& w) {
  if (w.dtype != DType::kBF16 || w.layout != WeightLayout::kRowMajor) {
    return absl::InvalidArgumentError(absl::StrCat(
        "PackBf16Tiles: needs a row-major BF16 matrix, got ", std::string(DTypeName(w.dtype)),
        w.layout == WeightLayout::kRowMajor ? "" : " (already packed)"));
  }
  if (w.rows < 0 || w.cols < 0 || (w.data == nullptr && w.rows > 0 && w.cols > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("PackBf16Tiles: bad matrix [", w.rows, ", ", w.cols, "]"));
  }
  const int64_t tiles = (w.rows + kPackedTileRows - 1) / kPackedTileRows;
  const size_t bytes = std::max<size_t>(64, tiles * kPackedTileRows * w.cols * sizeof(uint16_t));
  auto* dst = static_cast<uint16_t*>(std::aligned_alloc(64, bytes));
  if (dst == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("PackBf16Tiles: cannot allocate ", bytes,
                                                     " bytes for [", w.rows, ", ", w.cols, "]"));
  }
  const auto* src = static_cast<const uint16_t*>(w.data);
  for (int64_t tile = 0; tile < tiles; ++tile) {
    uint16_t* out = dst + tile * kPackedTileRows * w.cols;
    const int64_t r0 = tile * kPackedTileRows;
    const int64_t valid = std::min<int64_t>(kPackedTileRows, w.rows - r0);
    if (valid < kPackedTileRows) std::memset(out, 0, kPackedTileRows * w.cols * sizeof(uint16_t));
    // 64 columns at a time: their 64 output lines (4 KB) stay in L1 while
    // the 32 source rows are read sequentially, 128 bytes each.
    for (int64_t c0 = 0; c0 < w.cols; c0 += 64) {
      const int64_t c1 = std::min<int64_t>(w.cols, c0 + 64);
      for (int64_t j = 0; j < valid; ++j) {
        const uint16_t* row = src + (r0 + j) * w.cols;
        uint16_t* lane = out + (j % 16) * 2 + j / 16;
        for (int64_t c = c0; c < c1; ++c) lane[c * kPackedTileRows] = row[c];
      }
    }
  }
  PackedWeight packed;
  packed.matrix = w;
  packed.matrix.layout = WeightLayout::kBf16Tiles32;
  packed.matrix.data = dst;
  packed.storage =
      std::shared_ptr<const void>(dst, [](const void* p) { std::free(const_cast<void*>(p)); });
  return packed;
}

int64_t StoredBytes(const WeightMatrix& w) {
  const int64_t rows = w.layout == WeightLayout::kBf16Tiles32
                           ? (w.rows + kPackedTileRows - 1) / kPackedTileRows * kPackedTileRows
                           : w.rows;
  int64_t bytes = rows * w.cols * DTypeSize(w.dtype);
  if (w.dtype == DType::kF8E4M3) {
    bytes += (w.rows + w.block_rows - 1) / w.block_rows * w.scale_cols() * 4;
  }
  return bytes;
}

}  // namespace xpd::kernels
