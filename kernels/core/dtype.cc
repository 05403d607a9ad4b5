#include "kernels/core/dtype.h"

#include <array>
#include <cmath>

namespace xpd::kernels {
namespace {

std::array<float, 256> BuildF8Table() {
  std::array<float, 256> table{};
  for (int bits = 0; bits < 256; ++bits) {
    const int sign = bits >> 7, exponent = (bits >> 3) & 0xf, mantissa = bits & 0x7;
    float magnitude;
    if (exponent == 15 && mantissa == 7) {
      magnitude = std::nanf("");
    } else if (exponent == 0) {
      magnitude = std::ldexp(static_cast<float>(mantissa) / 8.0f, -6);
    } else {
      magnitude = std::ldexp(1.0f + static_cast<float>(mantissa) / 8.0f, exponent - 7);
    }
    table[bits] = sign ? -magnitude : magnitude;
  }
  return table;
}

const std::array<float, 256> kF8Table = BuildF8Table();

}  // namespace

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kBF16:
      return "BF16";
    case DType::kF8E4M3:
      return "F8_E4M3";
  }
  return "?";
}

int DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kBF16:
      return 2;
    case DType::kF8E4M3:
      return 1;
  }
  return 0;
}

float F8E4M3ToF32(uint8_t bits) { return kF8Table[bits]; }

uint8_t F32ToF8E4M3(float value) {
  if (std::isnan(value)) return 0x7f;
  const uint8_t sign = std::signbit(value) ? 0x80 : 0x00;
  float magnitude = std::fabs(value);
  if (magnitude >= 448.0f) return sign | 0x7e;
  // Exhaustive nearest search over the 127 finite non-negative codes; ties to even code.
  uint8_t best = 0;
  float best_error = magnitude;
  for (uint8_t code = 1; code <= 0x7e; ++code) {
    const float error = std::fabs(kF8Table[code] - magnitude);
    if (error < best_error || (error == best_error && (code & 1) == 0)) {
      best = code;
      best_error = error;
    }
  }
  return sign | best;
}

}  // namespace xpd::kernels
