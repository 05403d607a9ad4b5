#include "kernels/matmul/weight_packing.h"

#include <immintrin.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/bf16_rounding.h"
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

int64_t Bf16Lane(int64_t j) { return PackedLane(WeightLayout::kBf16Tiles32, j); }
int64_t F32Lane(int64_t j) { return PackedLane(WeightLayout::kF32Tiles32, j); }

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

// One FP8 row times its block scales, as WeightMatrix::At computes each value
// (F8E4M3ToF32(code) * scale in f32, the NaN codes included), rounded to
// bf16 bits. Eight codes at a time: a code shifted into an f16 is the value
// / 256, exactly, and (value / 256) * (scale * 256) rounds like value * scale.
void DequantizeF8RowToBf16(const uint8_t* src, const float* scale_row, int64_t cols,
                           int64_t block_cols, float* row_f32, uint16_t* dst) {
  for (int64_t b0 = 0; b0 < cols; b0 += block_cols) {
    const int64_t b1 = std::min(cols, b0 + block_cols);
    const float scale = scale_row[b0 / block_cols];
    const __m256 scale256 = _mm256_set1_ps(scale * 256.0f);
    int64_t c = b0;
    for (; c + 8 <= b1; c += 8) {
      const __m256i codes =
          _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + c)));
      const __m256i half =
          _mm256_or_si256(_mm256_slli_epi32(_mm256_and_si256(codes, _mm256_set1_epi32(0x7f)), 7),
                          _mm256_slli_epi32(_mm256_and_si256(codes, _mm256_set1_epi32(0x80)), 8));
      const __m128i halves =
          _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(half, half), 0x08));
      __m256 v = _mm256_mul_ps(_mm256_cvtph_ps(halves), scale256);
      // 0x7f / 0xff are NaN in E4M3 (the f16 trick would read 480).
      const __m256i is_nan = _mm256_cmpeq_epi32(_mm256_and_si256(codes, _mm256_set1_epi32(0x7f)),
                                                _mm256_set1_epi32(0x7f));
      const __m256i nan =
          _mm256_or_si256(_mm256_set1_epi32(0x7fc00000),
                          _mm256_slli_epi32(_mm256_and_si256(codes, _mm256_set1_epi32(0x80)), 24));
      v = _mm256_blendv_ps(v, _mm256_castsi256_ps(nan), _mm256_castsi256_ps(is_nan));
      _mm256_storeu_ps(row_f32 + c, v);
    }
    for (; c < b1; ++c) row_f32[c] = F8E4M3ToF32(src[c]) * scale;
  }
  RoundRowToBf16(row_f32, cols, dst);
}

// FP8 -> BF16 tiles: each tile's 32 rows are dequantized and rounded into a
// small row-major buffer, then packed like a BF16 tile.
void FillTilesFromF8(const WeightMatrix& w, uint16_t* dst) {
  std::vector<float> row_f32(w.cols);
  std::vector<uint16_t> tile(kPackedTileRows * w.cols);
  const auto* codes = static_cast<const uint8_t*>(w.data);
  const int64_t scale_cols = w.scale_cols();
  for (int64_t r0 = 0; r0 < w.rows; r0 += kPackedTileRows) {
    const int64_t valid = std::min<int64_t>(kPackedTileRows, w.rows - r0);
    for (int64_t j = 0; j < valid; ++j) {
      const int64_t r = r0 + j;
      DequantizeF8RowToBf16(codes + r * w.cols, w.block_scales + (r / w.block_rows) * scale_cols,
                            w.cols, w.block_cols, row_f32.data(), tile.data() + j * w.cols);
    }
    FillTiles(tile.data(), valid, w.cols, dst + r0 * w.cols, Bf16Lane);
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
  if (w.dtype == DType::kF8E4M3 &&
      (w.block_scales == nullptr || w.block_rows <= 0 || w.block_cols <= 0)) {
    return absl::InvalidArgumentError(absl::StrCat("PackTiles: F8_E4M3 matrix [", w.rows, ", ",
                                                   w.cols, "] without block scales"));
  }
  PackedWeight packed;
  packed.matrix = w;
  packed.matrix.layout =
      w.dtype == DType::kF32 ? WeightLayout::kF32Tiles32 : WeightLayout::kBf16Tiles32;
  if (w.dtype == DType::kF8E4M3) {
    packed.matrix.dtype = DType::kBF16;
    packed.matrix.block_scales = nullptr;
  }
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
    FillTilesFromF8(w, static_cast<uint16_t*>(dst));
  } else {
    FillTiles(static_cast<const float*>(w.data), w.rows, w.cols, static_cast<float*>(dst), F32Lane);
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
