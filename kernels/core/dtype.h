// Element types of weights and activations, and exact scalar conversions.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace xpd::kernels {

enum class DType : uint8_t { kF32, kBF16, kF8E4M3 };

const char* DTypeName(DType dtype);  // "F32", "BF16", "F8_E4M3" (safetensors spelling)
int DTypeSize(DType dtype);          // bytes per element

inline float Bf16ToF32(uint16_t bits) { return std::bit_cast<float>(uint32_t{bits} << 16); }

// Round-to-nearest-even, NaN preserved (quieted).
inline uint16_t F32ToBf16(float value) {
  uint32_t bits = std::bit_cast<uint32_t>(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

inline float RoundToBf16(float value) { return Bf16ToF32(F32ToBf16(value)); }

// float8 e4m3fn: bias 7, no infinities, 0x7f/0xff are NaN, max finite 448.
float F8E4M3ToF32(uint8_t bits);
// Round-to-nearest-even with saturation to +-448 (the reference kernels saturate).
uint8_t F32ToF8E4M3(float value);

}  // namespace xpd::kernels
