#include "kernels/matmul/weight_packing.h"

#include <immintrin.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/core/dtype.h"
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

void PackBlock(const uint8_t* src, int64_t cols, int64_t c0, uint8_t* out) {
  for (int half = 0; half < 2; ++half) {  // rows 16 * half ... + 15
    __m128i r[16];
    for (int j = 0; j < 16; ++j) {
      r[j] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + (half * 16 + j) * cols + c0));
    }
    Transpose16x16Bytes(r);
    for (int c = 0; c < 16; ++c) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + (c0 + c) * kPackedTileRows + half * 16),
                       r[c]);
    }
  }
}

int64_t Bf16Lane(int64_t j) { return PackedLane(WeightLayout::kBf16Tiles32, j); }
int64_t NaturalLane(int64_t j) { return j; }  // kF32Tiles32, kF8Tiles32

// Copies one row-major matrix into its tiles; `lane(j)` is where row j of a
// tile sits in each k-line. Full tiles go 8 columns (16 for bytes) at a time
// through PackBlock; the last partial tile and column tail one value at a time.
template <typename T, typename Lane>
void FillTiles(const T* src, int64_t rows, int64_t cols, T* dst, Lane lane) {
  constexpr int64_t kBlockCols = sizeof(T) == 1 ? 16 : 8;
  const int64_t tiles = (rows + kPackedTileRows - 1) / kPackedTileRows;
  for (int64_t tile = 0; tile < tiles; ++tile) {
    T* out = dst + tile * kPackedTileRows * cols;
    const T* in = src + tile * kPackedTileRows * cols;
    const int64_t valid = std::min<int64_t>(kPackedTileRows, rows - tile * kPackedTileRows);
    int64_t c0 = 0;
    if (valid == kPackedTileRows) {
      for (; c0 + kBlockCols <= cols; c0 += kBlockCols) PackBlock(in, cols, c0, out);
    } else {
      std::memset(out, 0, kPackedTileRows * cols * sizeof(T));
    }
    for (int64_t j = 0; j < valid; ++j) {
      for (int64_t c = c0; c < cols; ++c) out[c * kPackedTileRows + lane(j)] = in[j * cols + c];
    }
  }
}

// The first NaN code (0x7f or 0xff) of a row-major FP8 matrix, as (row,
// column), or (-1, -1) if there is none.
std::pair<int64_t, int64_t> FindF8Nan(const uint8_t* codes, int64_t rows, int64_t cols) {
  const __m256i magnitude = _mm256_set1_epi8(0x7f);
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = codes + r * cols;
    int64_t c = 0;
    for (; c + 32 <= cols; c += 32) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + c));
      const __m256i nan = _mm256_cmpeq_epi8(_mm256_and_si256(v, magnitude), magnitude);
      if (!_mm256_testz_si256(nan, nan)) break;  // the scalar loop finds the column
    }
    for (; c < cols; ++c) {
      if ((row[c] & 0x7f) == 0x7f) return {r, c};
    }
  }
  return {-1, -1};
}

// One scale line per (tile, column block): lane j holds the scale of the
// tile's row j (zero for padding rows), see kF8Tiles32 in weight_matrix.h.
void FillScaleLines(const WeightMatrix& w, float* dst) {
  const int64_t tiles = (w.rows + kPackedTileRows - 1) / kPackedTileRows;
  const int64_t scale_cols = w.scale_cols();
  for (int64_t tile = 0; tile < tiles; ++tile) {
    for (int64_t kb = 0; kb < scale_cols; ++kb) {
      float* line = dst + (tile * scale_cols + kb) * kPackedTileRows;
      for (int64_t j = 0; j < kPackedTileRows; ++j) {
        const int64_t r = tile * kPackedTileRows + j;
        line[j] = r < w.rows ? w.block_scales[(r / w.block_rows) * scale_cols + kb] : 0.0f;
      }
    }
  }
}

}  // namespace

absl::StatusOr<PackedWeight> PackTiles(const WeightMatrix& w) {
  if (w.layout != WeightLayout::kRowMajor) {
    return absl::InvalidArgumentError(
        absl::StrCat("PackTiles: ", std::string(DTypeName(w.dtype)), " matrix is already packed"));
  }
  if (w.rows < 0 || w.cols < 0 || (w.data == nullptr && w.rows > 0 && w.cols > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("PackTiles: bad ",
                                                   std::string(DTypeName(w.dtype)), " matrix [",
                                                   w.rows, ", ", w.cols, "]"));
  }
  if (w.dtype == DType::kF8E4M3) {
    const std::string what = absl::StrCat("PackTiles: F8_E4M3 matrix [", w.rows, ", ", w.cols, "]");
    if (w.block_scales == nullptr || w.block_rows <= 0 || w.block_cols <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(what, " without block scales"));
    }
    const auto [r, c] = FindF8Nan(static_cast<const uint8_t*>(w.data), w.rows, w.cols);
    if (r >= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " holds a NaN code at [", r, ", ", c, "]"));
    }
  }
  PackedWeight packed;
  packed.matrix = w;
  packed.matrix.layout = w.dtype == DType::kF32    ? WeightLayout::kF32Tiles32
                         : w.dtype == DType::kBF16 ? WeightLayout::kBf16Tiles32
                                                   : WeightLayout::kF8Tiles32;
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
              Bf16Lane);
  } else if (w.dtype == DType::kF8E4M3) {
    FillTiles(static_cast<const uint8_t*>(w.data), w.rows, w.cols, static_cast<uint8_t*>(dst),
              NaturalLane);
    float* scale_lines = reinterpret_cast<float*>(static_cast<char*>(dst) + PackedF8CodeBytes(w));
    FillScaleLines(w, scale_lines);
    packed.matrix.block_scales = scale_lines;
  } else {
    FillTiles(static_cast<const float*>(w.data), w.rows, w.cols, static_cast<float*>(dst),
              NaturalLane);
  }
  packed.matrix.data = dst;
  packed.storage = std::shared_ptr<const void>(
      dst, [bytes](const void* p) { ::munmap(const_cast<void*>(p), bytes); });
  return packed;
}

}  // namespace xpd::kernels
