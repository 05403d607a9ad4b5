// f32 -> bf16 rounding on AVX2 vectors (the baseline ISA), bit-identical to
// F32ToBf16 in dtype.h: round to nearest even, NaN quieted. Shared by the
// matmul driver (x rounded for kBF16 products) and the elementwise op that
// rounds an activation once for every product that reads it.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "kernels/core/dtype.h"

namespace xpd::kernels {

// The bf16 bits of 8 lanes, in the high half of each 32-bit lane (so the
// vector, read as f32, holds the rounded values).
inline __m256i RoundToBf16High(__m256 v) {
  const __m256i bits = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_add_epi32(bits, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb));
  const __m256i quiet = _mm256_or_si256(bits, _mm256_set1_epi32(0x00400000));
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  return _mm256_and_si256(_mm256_blendv_epi8(rounded, quiet, nan),
                          _mm256_set1_epi32(static_cast<int32_t>(0xffff0000u)));
}

// dst[c] = RoundToBf16(src[c]) for c in [0, k); dst may equal src.
inline void RoundRowToBf16F32(const float* src, int64_t k, float* dst) {
  int64_t c = 0;
  for (; c + 8 <= k; c += 8) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + c),
                        RoundToBf16High(_mm256_loadu_ps(src + c)));
  }
  for (; c < k; ++c) dst[c] = RoundToBf16(src[c]);
}

// dst[c] = F32ToBf16(src[c]) for c in [0, k): the bf16 bits themselves.
inline void RoundRowToBf16(const float* src, int64_t k, uint16_t* dst) {
  int64_t c = 0;
  for (; c + 16 <= k; c += 16) {
    const __m256i lo = _mm256_srli_epi32(RoundToBf16High(_mm256_loadu_ps(src + c)), 16);
    const __m256i hi = _mm256_srli_epi32(RoundToBf16High(_mm256_loadu_ps(src + c + 8)), 16);
    // packus interleaves 128-bit lanes; the permute restores column order.
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, hi), 0xd8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + c), packed);
  }
  for (; c < k; ++c) dst[c] = F32ToBf16(src[c]);
}

}  // namespace xpd::kernels
