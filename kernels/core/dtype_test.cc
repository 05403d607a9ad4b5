#include "kernels/core/dtype.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"

namespace xpd::kernels {
namespace {

float FromBits(uint32_t bits) { return std::bit_cast<float>(bits); }

TEST(DTypeTest, NamesAndSizes) {
  EXPECT_EQ(DTypeName(DType::kF32), "F32");
  EXPECT_EQ(DTypeName(DType::kBF16), "BF16");
  EXPECT_EQ(DTypeName(DType::kF8E4M3), "F8_E4M3");
  EXPECT_EQ(DTypeSize(DType::kF32), 4);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2);
  EXPECT_EQ(DTypeSize(DType::kF8E4M3), 1);
}

TEST(DTypeTest, Bf16RoundsToNearestEven) {
  EXPECT_EQ(F32ToBf16(1.0f), 0x3f80);
  EXPECT_EQ(Bf16ToF32(0x3f80), 1.0f);
  // Below half an ulp: down; above: up.
  EXPECT_EQ(F32ToBf16(FromBits(0x3f807fff)), 0x3f80);
  EXPECT_EQ(F32ToBf16(FromBits(0x3f808001)), 0x3f81);
  // Exact ties go to the even mantissa.
  EXPECT_EQ(F32ToBf16(FromBits(0x3f808000)), 0x3f80);  // even stays
  EXPECT_EQ(F32ToBf16(FromBits(0x3f818000)), 0x3f82);  // odd rounds up
  EXPECT_EQ(F32ToBf16(FromBits(0xbf818000)), 0xbf82);  // sign symmetric
  // Carry into the exponent, and overflow to infinity.
  EXPECT_EQ(F32ToBf16(FromBits(0x3fffffff)), 0x4000);
  EXPECT_EQ(F32ToBf16(FromBits(0x7f7fffff)), 0x7f80);
  EXPECT_EQ(F32ToBf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(F32ToBf16(-0.0f), 0x8000);
  // Subnormals round like everything else.
  EXPECT_EQ(F32ToBf16(FromBits(0x00008000)), 0x0000);
  EXPECT_EQ(F32ToBf16(FromBits(0x00018000)), 0x0002);
}

TEST(DTypeTest, Bf16PreservesNaN) {
  for (uint32_t bits : {0x7fc00000u, 0x7f800001u, 0xff800001u, 0x7fffffffu, 0x7f80ffffu}) {
    const uint16_t h = F32ToBf16(FromBits(bits));
    EXPECT_TRUE(std::isnan(Bf16ToF32(h))) << std::hex << bits;
    EXPECT_EQ(h & 0x8000, (bits >> 16) & 0x8000);
  }
  // A signalling NaN whose payload lives only in the low bits must not become inf.
  EXPECT_NE(F32ToBf16(FromBits(0x7f800001u)), 0x7f80);
}

TEST(DTypeTest, Bf16RoundTripIsExact) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = Bf16ToF32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(F32ToBf16(f), h);
    EXPECT_EQ(RoundToBf16(f), f);
  }
}

// Independent decoding of e4m3fn from its definition.
float DecodeE4M3(int code) {
  const int sign = code >> 7, e = (code >> 3) & 0xf, m = code & 7;
  if ((code & 0x7f) == 0x7f) return std::numeric_limits<float>::quiet_NaN();
  const double mag = e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1.0 + m / 8.0, e - 7);
  return static_cast<float>(sign ? -mag : mag);
}

TEST(DTypeTest, F8DecodesEveryCode) {
  for (int code = 0; code < 256; ++code) {
    const float got = F8E4M3ToF32(static_cast<uint8_t>(code));
    const float want = DecodeE4M3(code);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << code;
    } else {
      EXPECT_EQ(got, want) << code;
      EXPECT_EQ(std::signbit(got), code >= 0x80) << code;
    }
  }
  EXPECT_TRUE(std::isnan(F8E4M3ToF32(0x7f)));
  EXPECT_TRUE(std::isnan(F8E4M3ToF32(0xff)));
  EXPECT_EQ(F8E4M3ToF32(0x7e), 448.0f);
  EXPECT_EQ(F8E4M3ToF32(0xfe), -448.0f);
  EXPECT_EQ(F8E4M3ToF32(0x01), std::ldexp(1.0f, -9));  // smallest subnormal 2^-6 / 8
  EXPECT_EQ(F8E4M3ToF32(0x07), std::ldexp(7.0f / 8, -6));
  EXPECT_EQ(F8E4M3ToF32(0x08), std::ldexp(1.0f, -6));  // smallest normal
  EXPECT_EQ(F8E4M3ToF32(0x38), 1.0f);
}

TEST(DTypeTest, F8EncodesRoundTripAndSaturates) {
  for (int code = 0; code < 256; ++code) {
    if ((code & 0x7f) == 0x7f) continue;
    if (code == 0x80) continue;  // -0 encodes as 0x80 (checked below)
    EXPECT_EQ(F32ToF8E4M3(F8E4M3ToF32(static_cast<uint8_t>(code))), code) << code;
  }
  EXPECT_EQ(F32ToF8E4M3(-0.0f), 0x80);
  EXPECT_EQ(F32ToF8E4M3(448.0f), 0x7e);
  EXPECT_EQ(F32ToF8E4M3(1e6f), 0x7e);
  EXPECT_EQ(F32ToF8E4M3(-1e6f), 0xfe);
  EXPECT_EQ(F32ToF8E4M3(std::numeric_limits<float>::infinity()), 0x7e);
  EXPECT_EQ(F32ToF8E4M3(-std::numeric_limits<float>::infinity()), 0xfe);
  EXPECT_EQ((F32ToF8E4M3(std::numeric_limits<float>::quiet_NaN()) & 0x7f), 0x7f);
  // Round to nearest, ties to even: 1.0625 is halfway between 1.0 (0x38) and 1.125 (0x39).
  EXPECT_EQ(F32ToF8E4M3(1.0625f), 0x38);
  EXPECT_EQ(F32ToF8E4M3(1.1875f), 0x3a);  // between 0x39 and 0x3a: even is 0x3a
  EXPECT_EQ(F32ToF8E4M3(1.07f), 0x39);
  // Below half the smallest subnormal rounds to zero; exactly half ties to even (zero).
  EXPECT_EQ(F32ToF8E4M3(std::ldexp(1.0f, -11)), 0x00);
  EXPECT_EQ(F32ToF8E4M3(std::ldexp(1.0f, -10)), 0x00);
  EXPECT_EQ(F32ToF8E4M3(std::ldexp(1.5f, -10)), 0x01);
}

}  // namespace
}  // namespace xpd::kernels
