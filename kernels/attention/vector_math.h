// Small AVX2 vector helpers for attention (AVX2 is the build's baseline ISA).
// Fixed reduction order, so results are reproducible bit for bit.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "kernels/core/vector_exp.h"

namespace xpd::kernels::internal {

inline float HorizontalSum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
  return _mm_cvtss_f32(lo);
}

inline float Dot(const float* a, const float* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  }
  float sum = HorizontalSum(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// out[j] = Dot(a[j], b, n) for j < 4, bit for bit (each a[j] keeps Dot's own
// accumulators and order); b is loaded once for the four, and the four
// independent chains hide the FMA latency a single Dot waits on.
inline void Dot4(const float* const a[4], const float* b, int64_t n, float out[4]) {
  __m256 acc0[4], acc1[4];
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) acc0[j] = acc1[j] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 b0 = _mm256_loadu_ps(b + i), b1 = _mm256_loadu_ps(b + i + 8);
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      acc0[j] = _mm256_fmadd_ps(_mm256_loadu_ps(a[j] + i), b0, acc0[j]);
      acc1[j] = _mm256_fmadd_ps(_mm256_loadu_ps(a[j] + i + 8), b1, acc1[j]);
    }
  }
  for (; i + 8 <= n; i += 8) {
    const __m256 b0 = _mm256_loadu_ps(b + i);
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) acc0[j] = _mm256_fmadd_ps(_mm256_loadu_ps(a[j] + i), b0, acc0[j]);
  }
  for (int j = 0; j < 4; ++j) {
    float sum = HorizontalSum(_mm256_add_ps(acc0[j], acc1[j]));
    for (int64_t t = i; t < n; ++t) sum += a[j][t] * b[t];
    out[j] = sum;
  }
}

// y[j] = sum over t < count of alpha[j][t] * x[t], for j < H, each element
// summed in t order exactly as y[j] = 0 followed by
// Axpy(alpha[j][t], x[t], y[j], n) for t = 0, 1, ...: bit for bit, but with
// the partial sums of eight columns kept in registers across all t.
template <int H>
inline void AxpySum(const float* const alpha[], const float* const* x, int64_t count,
                    float* const y[], int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 acc[H];
#pragma GCC unroll 8
    for (int j = 0; j < H; ++j) acc[j] = _mm256_setzero_ps();
    for (int64_t t = 0; t < count; ++t) {
      const __m256 xv = _mm256_loadu_ps(x[t] + i);
#pragma GCC unroll 8
      for (int j = 0; j < H; ++j) {
        acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(alpha[j][t]), xv, acc[j]);
      }
    }
#pragma GCC unroll 8
    for (int j = 0; j < H; ++j) _mm256_storeu_ps(y[j] + i, acc[j]);
  }
  for (; i < n; ++i) {
    for (int j = 0; j < H; ++j) {
      y[j][i] = 0.0f;
      for (int64_t t = 0; t < count; ++t) y[j][i] += alpha[j][t] * x[t][i];
    }
  }
}

// y += alpha * x
inline void Axpy(float alpha, const float* x, float* y, int64_t n) {
  const __m256 a = _mm256_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(a, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  }
  for (; i < n; ++i) y[i] += alpha * x[i];
}

inline void Scale(float alpha, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] *= alpha;
}

// Turns x[0..n) into softmax probabilities (f32, max-subtracted), eight lanes
// at a time; the ragged end is padded with -inf (weight 0).
inline void SoftmaxInPlace(float* x, int64_t n) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  auto load = [&](int64_t i, float* pad) {
    if (i + 8 <= n) return _mm256_loadu_ps(x + i);
    std::fill_n(pad, 8, neg_inf);
    std::copy(x + i, x + n, pad);
    return _mm256_loadu_ps(pad);
  };
  alignas(32) float pad[8];
  __m256 max_v = _mm256_set1_ps(neg_inf);
  for (int64_t i = 0; i < n; i += 8) max_v = _mm256_max_ps(max_v, load(i, pad));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, max_v);
  const __m256 max_score = _mm256_set1_ps(*std::max_element(lanes, lanes + 8));
  __m256 sum_v = _mm256_setzero_ps();
  for (int64_t i = 0; i < n; i += 8) {
    const __m256 e = Exp8(_mm256_sub_ps(load(i, pad), max_score));
    sum_v = _mm256_add_ps(sum_v, e);
    _mm256_storeu_ps(pad, e);
    std::copy_n(pad, std::min<int64_t>(8, n - i), x + i);
  }
  Scale(1.0f / HorizontalSum(sum_v), x, n);
}

}  // namespace xpd::kernels::internal
