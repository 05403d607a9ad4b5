// e^x on 8 lanes with AVX2 (the build's baseline ISA), for softmax, SiLU and
// sampling. std::exp is a scalar call per element: in a 512-token prefill the
// attention softmax and the experts' SiLU call it ~40M times.
//
// Cephes' expf polynomial (within 1 ulp of exp over a dense sweep of the
// range, see the test), with separate multiplies and adds (no
// FMA contraction choices), so the result is the same on every build. Exactly
// 0 below -87 and for -inf, +inf above 88.7, NaN for NaN.
//
// Inline on purpose: only AVX2 translation units may include this (never an
// AVX-512 kernel file, whose copy the linker could pick for AVX2 callers).
#pragma once

#include <immintrin.h>

#include <initializer_list>

namespace xpd::kernels {

inline __m256 Exp8(__m256 x) {
  const __m256 magic = _mm256_set1_ps(12582912.0f);  // 1.5 * 2^23: round to integer
  const __m256 low = _mm256_set1_ps(-87.0f), high = _mm256_set1_ps(88.7f);
  const __m256 clamped = _mm256_min_ps(_mm256_max_ps(x, low), high);
  const __m256 shifted =
      _mm256_add_ps(_mm256_mul_ps(clamped, _mm256_set1_ps(1.44269504088896341f)), magic);
  const __m256 n = _mm256_sub_ps(shifted, magic);  // round(x / ln2), in [-126, 128]
  const __m256i n_int = _mm256_sub_epi32(_mm256_castps_si256(shifted), _mm256_castps_si256(magic));
  // r = x - n * ln2, with ln2 split in two so that n * 0.693359375 is exact.
  __m256 r = _mm256_sub_ps(clamped, _mm256_mul_ps(n, _mm256_set1_ps(0.693359375f)));
  r = _mm256_add_ps(r, _mm256_mul_ps(n, _mm256_set1_ps(2.12194440e-4f)));
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  for (float c :
       {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f}) {
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(c));
  }
  __m256 y = _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(p, r), r), r);
  y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
  // 2^n as two factors: n reaches 128 near the top of the range, past the
  // largest normal exponent.
  const __m256i half_n = _mm256_srai_epi32(n_int, 1);
  const __m256 two_half =
      _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half_n, _mm256_set1_epi32(127)), 23));
  const __m256 two_rest = _mm256_castsi256_ps(_mm256_slli_epi32(
      _mm256_add_epi32(_mm256_sub_epi32(n_int, half_n), _mm256_set1_epi32(127)), 23));
  __m256 result = _mm256_mul_ps(_mm256_mul_ps(y, two_half), two_rest);
  result = _mm256_and_ps(result, _mm256_cmp_ps(x, low, _CMP_GT_OQ));  // 0 below; NaN -> 0 here
  result = _mm256_blendv_ps(result, _mm256_set1_ps(__builtin_inff()),
                            _mm256_cmp_ps(x, high, _CMP_GT_OQ));
  return _mm256_blendv_ps(result, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

}  // namespace xpd::kernels
