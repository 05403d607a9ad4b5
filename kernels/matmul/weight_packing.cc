#include "kernels/matmul/weight_packing.h"

#include <immintrin.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/core/simd_transpose.h"

namespace xpd::kernels {
namespace {

// Columns [c0, c0 + 8) of a full tile of 32 rows -> 8 lines. BF16: word j of
// a line pairs row j (low half) with row j + 16 (high half).
void PackBlock(const uint16_t* src, int64_t cols, int64_t c0, uint16_t* out) {
  for (int half = 0; half < 2; ++half) {  // words 0-7, then 8-15
    __m256 r[8];
    for (int j = 0; j < 8; ++j) {
      const int64_t row = half * 8 + j;
      const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + row * cols + c0));
      const __m128i b =
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + (row + 16) * cols + c0));
      r[j] =
          _mm256_castsi256_ps(_mm256_set_m128i(_mm_unpackhi_epi16(a, b), _mm_unpacklo_epi16(a, b)));
    }
    Transpose8x8(r);
    for (int c = 0; c < 8; ++c) {
      _mm256_storeu_ps(reinterpret_cast<float*>(out + (c0 + c) * kPackedTileRows + half * 16),
                       r[c]);
    }
  }
}

void PackBlock(const float* src, int64_t cols, int64_t c0, float* out) {
  for (int group = 0; group < 4; ++group) {  // rows 8 * group ... + 7
    __m256 r[8];
    for (int j = 0; j < 8; ++j) r[j] = _mm256_loadu_ps(src + (group * 8 + j) * cols + c0);
    Transpose8x8(r);
    for (int c = 0; c < 8; ++c) {
      _mm256_storeu_ps(out + (c0 + c) * kPackedTileRows + group * 8, r[c]);
    }
  }
}

// Copies one row-major matrix into its tiles; `lane(j)` is where row j of a
// tile sits in each k-line. Full tiles go 8 columns at a time through
// PackBlock; the last partial tile and column tail one value at a time.
template <typename T, typename Lane>
void FillTiles(const T* src, int64_t rows, int64_t cols, T* dst, Lane lane) {
  const int64_t tiles = (rows + kPackedTileRows - 1) / kPackedTileRows;
  for (int64_t tile = 0; tile < tiles; ++tile) {
    T* out = dst + tile * kPackedTileRows * cols;
    const T* in = src + tile * kPackedTileRows * cols;
    const int64_t valid = std::min<int64_t>(kPackedTileRows, rows - tile * kPackedTileRows);
    int64_t c0 = 0;
    if (valid == kPackedTileRows) {
      for (; c0 + 8 <= cols; c0 += 8) PackBlock(in, cols, c0, out);
    } else {
      std::memset(out, 0, kPackedTileRows * cols * sizeof(T));
    }
    for (int64_t j = 0; j < valid; ++j) {
      for (int64_t c = c0; c < cols; ++c) out[c * kPackedTileRows + lane(j)] = in[j * cols + c];
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
  // Page-aligned and populated in one call: faulting the pages in one by one
  // cost more than the packing itself (loading `small` packs 2.4 GB).
  const size_t bytes = std::max<int64_t>(64, StoredBytes(packed.matrix));
  void* dst = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (dst == MAP_FAILED) {
    return absl::ResourceExhaustedError(absl::StrCat("PackTiles: cannot map ", bytes,
                                                     " bytes for [", w.rows, ", ", w.cols,
                                                     "]: ", std::strerror(errno)));
  }
  if (w.dtype == DType::kBF16) {
    FillTiles(static_cast<const uint16_t*>(w.data), w.rows, w.cols, static_cast<uint16_t*>(dst),
              [](int64_t j) { return (j % 16) * 2 + j / 16; });
  } else {
    FillTiles(static_cast<const float*>(w.data), w.rows, w.cols, static_cast<float*>(dst),
              [](int64_t j) { return j; });
  }
  packed.matrix.data = dst;
  packed.storage = std::shared_ptr<const void>(
      dst, [bytes](const void* p) { ::munmap(const_cast<void*>(p), bytes); });
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
