#include "kernels/matmul/weight_packing.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace xpd::kernels {
namespace {

// Copies one row-major matrix into its tiles; `lane(j)` is where row j of a
// tile sits in each k-line. 64 columns at a time: their output lines stay in
// L1 while the 32 source rows are read sequentially.
template <typename T, typename Lane>
void FillTiles(const T* src, int64_t rows, int64_t cols, T* dst, Lane lane) {
  const int64_t tiles = (rows + kPackedTileRows - 1) / kPackedTileRows;
  for (int64_t tile = 0; tile < tiles; ++tile) {
    T* out = dst + tile * kPackedTileRows * cols;
    const int64_t r0 = tile * kPackedTileRows;
    const int64_t valid = std::min<int64_t>(kPackedTileRows, rows - r0);
    if (valid < kPackedTileRows) std::memset(out, 0, kPackedTileRows * cols * sizeof(T));
    for (int64_t c0 = 0; c0 < cols; c0 += 64) {
      const int64_t c1 = std::min<int64_t>(cols, c0 + 64);
      for (int64_t j = 0; j < valid; ++j) {
        const T* row = src + (r0 + j) * cols;
        T* column = out + lane(j);
        for (int64_t c = c0; c < c1; ++c) column[c * kPackedTileRows] = row[c];
      }
    }
  }
}

}  // namespace

absl::StatusOr<PackedWeight> PackTiles(const WeightMatrix& w) {
  if (w.dtype == DType::kF8E4M3 || w.layout != WeightLayout::kRowMajor) {
    return absl::InvalidArgumentError(absl::StrCat(
        "PackTiles: needs a row-major BF16 or F32 matrix, got ", std::string(DTypeName(w.dtype)),
        w.layout == WeightLayout::kRowMajor ? "" : " (already packed)"));
  }
  if (w.rows < 0 || w.cols < 0 || (w.data == nullptr && w.rows > 0 && w.cols > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("PackTiles: bad matrix [", w.rows, ", ", w.cols, "]"));
  }
  PackedWeight packed;
  packed.matrix = w;
  packed.matrix.layout =
      w.dtype == DType::kBF16 ? WeightLayout::kBf16Tiles32 : WeightLayout::kF32Tiles32;
  const size_t bytes = std::max<int64_t>(64, StoredBytes(packed.matrix));
  void* dst = std::aligned_alloc(64, bytes);
  if (dst == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("PackTiles: cannot allocate ", bytes,
                                                     " bytes for [", w.rows, ", ", w.cols, "]"));
  }
  if (w.dtype == DType::kBF16) {
    FillTiles(static_cast<const uint16_t*>(w.data), w.rows, w.cols, static_cast<uint16_t*>(dst),
              [](int64_t j) { return (j % 16) * 2 + j / 16; });
  } else {
    FillTiles(static_cast<const float*>(w.data), w.rows, w.cols, static_cast<float*>(dst),
              [](int64_t j) { return j; });
  }
  packed.matrix.data = dst;
  packed.storage =
      std::shared_ptr<const void>(dst, [](const void* p) { std::free(const_cast<void*>(p)); });
  return packed;
}

int64_t StoredBytes(const WeightMatrix& w) {
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
