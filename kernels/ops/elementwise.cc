#include "kernels/ops/elementwise.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "kernels/core/bf16_rounding.h"
#include "kernels/core/vector_exp.h"

namespace xpd::kernels {

absl::Status RmsNorm(const RmsNormArgs& a) {
  if (a.x == nullptr || a.y == nullptr || a.weight == nullptr || a.dim <= 0 || a.rows < 0) {
    return absl::InvalidArgumentError("RmsNorm: null buffer or non-positive dim");
  }
  const int64_t xs = a.x_stride ? a.x_stride : a.dim, ys = a.y_stride ? a.y_stride : a.dim;
  for (int64_t r = 0; r < a.rows; ++r) {
    const float* x = a.x + r * xs;
    float* y = a.y + r * ys;
    float sum = 0.0f;
    for (int64_t i = 0; i < a.dim; ++i) sum += x[i] * x[i];
    const float scale = 1.0f / std::sqrt(sum / static_cast<float>(a.dim) + a.eps);
    for (int64_t i = 0; i < a.dim; ++i) y[i] = a.weight[i] * (x[i] * scale);
  }
  return absl::OkStatus();
}

absl::Status ApplyRope(const RopeArgs& a) {
  if (a.x == nullptr || a.positions == nullptr || a.inv_freq == nullptr || a.rope_dim % 2 != 0) {
    return absl::InvalidArgumentError("ApplyRope: null buffer or odd rope_dim");
  }
  const int32_t pairs = a.rope_dim / 2;
  float cos_table[256], sin_table[256];
  if (pairs > 256) return absl::InvalidArgumentError("ApplyRope: rope_dim > 512");
  for (int64_t r = 0; r < a.rows; ++r) {
    const float position = static_cast<float>(a.positions[r]);
    for (int32_t i = 0; i < pairs; ++i) {
      const float angle = position * a.inv_freq[i];  // f32 like the reference's outer product
      cos_table[i] = std::cos(angle);
      sin_table[i] = std::sin(angle);
    }
    for (int32_t h = 0; h < a.heads; ++h) {
      float* v = a.x + r * a.row_stride + h * a.head_stride;
      for (int32_t i = 0; i < pairs; ++i) {
        const float x0 = v[2 * i], x1 = v[2 * i + 1];
        v[2 * i] = x0 * cos_table[i] - x1 * sin_table[i];
        v[2 * i + 1] = x0 * sin_table[i] + x1 * cos_table[i];
      }
    }
  }
  return absl::OkStatus();
}

absl::Status SiluMul(const SiluMulArgs& a) {
  if (a.gate == nullptr || a.up == nullptr || a.out == nullptr) {
    return absl::InvalidArgumentError("SiluMul: null buffer");
  }
  for (int64_t r = 0; r < a.rows; ++r) {
    const float* g = a.gate + r * a.in_stride;
    const float* u = a.up + r * a.in_stride;
    float* o = a.out + r * a.out_stride;
    // Eight lanes at a time; the ragged end goes through the same vector code.
    auto silu_mul = [](__m256 gate, __m256 up) {
      const __m256 e = Exp8(_mm256_sub_ps(_mm256_setzero_ps(), gate));
      return _mm256_mul_ps(_mm256_div_ps(gate, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), up);
    };
    auto finish = [&](__m256 v) {
      return a.round_to_bf16 ? _mm256_castsi256_ps(RoundToBf16High(v)) : v;
    };
    int64_t i = 0;
    for (; i + 8 <= a.dim; i += 8) {
      _mm256_storeu_ps(o + i, finish(silu_mul(_mm256_loadu_ps(g + i), _mm256_loadu_ps(u + i))));
    }
    if (i < a.dim) {
      alignas(32) float gv[8] = {}, uv[8] = {}, ov[8];
      std::copy(g + i, g + a.dim, gv);
      std::copy(u + i, u + a.dim, uv);
      _mm256_store_ps(ov, finish(silu_mul(_mm256_load_ps(gv), _mm256_load_ps(uv))));
      std::copy(ov, ov + (a.dim - i), o + i);
    }
  }
  return absl::OkStatus();
}

absl::Status RoundToBf16Rows(const RoundToBf16Args& a) {
  if (a.x == nullptr || a.y == nullptr || a.rows < 0 || a.dim < 0) {
    return absl::InvalidArgumentError("RoundToBf16Rows: null buffer or negative size");
  }
  const int64_t xs = a.x_stride ? a.x_stride : a.dim, ys = a.y_stride ? a.y_stride : a.dim;
  for (int64_t r = 0; r < a.rows; ++r) RoundRowToBf16F32(a.x + r * xs, a.dim, a.y + r * ys);
  return absl::OkStatus();
}

}  // namespace xpd::kernels
