#include "kernels/ops/elementwise.h"

#include <cmath>

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
    for (int64_t i = 0; i < a.dim; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
  }
  return absl::OkStatus();
}

}  // namespace xpd::kernels
