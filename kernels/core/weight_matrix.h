// A read-only view of a linear layer's weight, in the layout checkpoints use.
#pragma once

#include <cstdint>

#include "kernels/core/dtype.h"

namespace xpd::kernels {

// Row-major [rows, cols] = [out_features, in_features]; y = x * W^T.
// F8_E4M3 weights carry block scales (`weight_scale_inv` in checkpoints):
// W[r, c] = f8(data[r, c]) * block_scales[r / block_rows, c / block_cols], with
// scale grid [ceil(rows / block_rows), ceil(cols / block_cols)] row-major;
// edge blocks may be partial. The view never owns memory (data may be mmap'ed).
//
// The packed layouts are what the matmul kernels stream: rows in tiles of 32
// (the last one zero-padded), each tile stored k-major as [cols][32], so a
// tile is one contiguous stream and each of its columns one line (32 bytes of
// FP8, 64 of BF16, 128 of F32). kF32Tiles32 and kF8Tiles32 store row r of the
// tile at lane r. In kBf16Tiles32 (BF16 weights, packed at load), 32-bit word
// w (0..15) holds row w in its low half and row w + 16 in its high half, so
// that shifting or masking a vector of words widens 16 consecutive rows to
// f32. A row slice starting on a tile boundary is still `data + first * cols`
// elements.
//
// kF8Tiles32 (F8_E4M3 weights, packed at load) carries its block scales as
// scale lines, one per (tile, column block): block_scales[(tile *
// scale_cols() + c / block_cols) * 32 + lane] is the scale of that lane's row,
// so any block_rows works and a row slice starting on a tile boundary is
// `block_scales + first * scale_cols()`. Its codes are never NaN (packing
// rejects 0x7f/0xff), which lets kernels widen them without a NaN check.
enum class WeightLayout : uint8_t { kRowMajor, kBf16Tiles32, kF32Tiles32, kF8Tiles32 };
inline constexpr int64_t kPackedTileRows = 32;
inline bool IsPacked(WeightLayout layout) { return layout != WeightLayout::kRowMajor; }
// The lane of a packed k-line that holds row `row` (0..31) of its tile.
inline int64_t PackedLane(WeightLayout layout, int64_t row) {
  return layout == WeightLayout::kBf16Tiles32 ? (row % 16) * 2 + row / 16 : row;
}

struct WeightMatrix {
  DType dtype = DType::kBF16;
  WeightLayout layout = WeightLayout::kRowMajor;
  const void* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  const float* block_scales = nullptr;  // F8_E4M3 only (scale lines when kF8Tiles32)
  int32_t block_rows = 128;
  int32_t block_cols = 128;

  int64_t scale_cols() const { return (cols + block_cols - 1) / block_cols; }
  // Exact weight value as float (the reference definition every kernel must match).
  float At(int64_t r, int64_t c) const;
  // Rows [first, first + count) as a view of the same storage. `first` must
  // start an FP8 scale block (row-major FP8) or a tile (packed layouts).
  WeightMatrix RowSlice(int64_t first, int64_t count) const;
};

// Bytes the matrix occupies as stored (padding and block scales included).
int64_t StoredBytes(const WeightMatrix& w);
// kF8Tiles32: bytes of the codes; the scale lines follow, 64-byte aligned.
int64_t PackedF8CodeBytes(const WeightMatrix& w);

}  // namespace xpd::kernels
