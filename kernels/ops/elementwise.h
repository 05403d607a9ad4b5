// Row-wise and element-wise ops of the DeepSeek-V3 forward pass: RMSNorm,
// interleaved (GPT-J style) rotary embedding with precomputed frequencies,
// the SwiGLU activation, and rounding to bf16 values.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace xpd::kernels {

// y[r] = weight * (x[r] * rsqrt(mean(x[r]^2) + eps)), in f32. x and y may alias.
struct RmsNormArgs {
  const float* x = nullptr;       // [rows, dim], row stride x_stride
  int64_t x_stride = 0;           // 0 means dim
  const float* weight = nullptr;  // [dim]
  float* y = nullptr;             // [rows, dim], row stride y_stride
  int64_t y_stride = 0;           // 0 means dim
  int64_t rows = 0;
  int64_t dim = 0;
  float eps = 1e-6f;
};
absl::Status RmsNorm(const RmsNormArgs& args);

// Rotates adjacent pairs (x[2i], x[2i+1]) of `rope_dim` channels in place by
// angle positions[row] * inv_freq[i] (the checkpoint's interleaved layout).
// Each row holds `heads` vectors of rope_dim channels spaced `head_stride` apart.
struct RopeArgs {
  float* x = nullptr;  // first rope channel of row 0, head 0
  int64_t row_stride = 0;
  int64_t head_stride = 0;
  int32_t heads = 1;
  int64_t rows = 0;
  int32_t rope_dim = 0;                // even
  const int64_t* positions = nullptr;  // [rows]
  const float* inv_freq = nullptr;     // [rope_dim / 2]
};
absl::Status ApplyRope(const RopeArgs& args);

// out[r, i] = silu(gate[r, i]) * up[r, i]. out may alias gate or up.
struct SiluMulArgs {
  const float* gate = nullptr;  // [rows, dim], row stride in_stride
  const float* up = nullptr;    // [rows, dim], row stride in_stride
  int64_t in_stride = 0;
  float* out = nullptr;  // [rows, dim], row stride out_stride
  int64_t out_stride = 0;
  int64_t rows = 0;
  int64_t dim = 0;
  // Store RoundToBf16(out) instead: the down projection's kBF16 operand,
  // rounded here once (MatMulArgs::x_is_bf16).
  bool round_to_bf16 = false;
};
absl::Status SiluMul(const SiluMulArgs& args);

// y[r, i] = RoundToBf16(x[r, i]) (round to nearest even, NaN quieted), kept
// as f32: an activation that several kBF16 products read, rounded once
// (MatMulArgs::x_is_bf16). y may alias x.
struct RoundToBf16Args {
  const float* x = nullptr;  // [rows, dim], row stride x_stride
  int64_t x_stride = 0;      // 0 means dim
  float* y = nullptr;        // [rows, dim], row stride y_stride
  int64_t y_stride = 0;      // 0 means dim
  int64_t rows = 0;
  int64_t dim = 0;
};
absl::Status RoundToBf16Rows(const RoundToBf16Args& args);

}  // namespace xpd::kernels
