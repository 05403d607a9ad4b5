// AVX-512 (and AVX512_BF16) register-tile kernels. This file is compiled with
// AVX-512 enabled and is only entered after GetCpuFeatures() says so; it must
// not instantiate library templates or inline functions with external linkage
// (the linker could pick these AVX-512 copies for AVX2-only callers).

#include <immintrin.h>

// GCC 12's AVX-512 headers trip -Wuninitialized on _mm512_undefined_* (GCC
// bug 105593); the warnings are about the headers, not this code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <utility>

#include "kernels/matmul/matmul_tiles.h"

namespace xpd::kernels::matmul_internal {
namespace {

constexpr int kLanes = 16;
constexpr int kTileA = 4;  // 4x6 accumulators + 6 W vectors + 1 x vector = 31 zmm
constexpr int kTileB = 6;

// The one horizontal-sum tree used by every kernel of this file: lanes
// (i, i+8), then (i, i+4), (i, i+2), (0, 1).
inline float Hsum(__m512 v) {
  const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
  return _mm_cvtss_f32(s4);
}

// Four Hsums at once with the same tree (the same pairs added at each level,
// and IEEE addition is commutative), so results are bitwise those of Hsum;
// about 3x fewer instructions, which matters for short k.
inline __m128 Hsum4(__m512 a, __m512 b, __m512 c, __m512 d) {
  // (i, i+8): a in the low 256 bits, b in the high ones; same for c, d.
  const __m512 ab =
      _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xee));
  const __m512 cd =
      _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xee));
  // (i, i+4): one 128-bit quarter per input, in order a, b, c, d.
  const __m512 q =
      _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xdd));
  // (i, i+2), then (0, 1), inside each quarter.
  const __m512 h = _mm512_add_ps(q, _mm512_permute_ps(q, 0x4e));
  const __m512 r = _mm512_add_ps(h, _mm512_permute_ps(h, 0xb1));
  return _mm512_castps512_ps128(
      _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), r));
}

template <int A, int B>
inline void LoadAcc(const TileArgs& t, __m512 (&acc)[A][B]) {
#pragma GCC unroll 4
  for (int a = 0; a < A; ++a) {
#pragma GCC unroll 6
    for (int b = 0; b < B; ++b) {
      acc[a][b] = t.first_chunk ? _mm512_setzero_ps()
                                : _mm512_loadu_ps(t.partial + (a * kMaxTileB + b) * kLanes);
    }
  }
}

template <int A, int B>
inline void StoreTile(const TileArgs& t, __m512 (&acc)[A][B]) {
  if (!t.last_chunk) {
#pragma GCC unroll 4
    for (int a = 0; a < A; ++a) {
#pragma GCC unroll 6
      for (int b = 0; b < B; ++b) {
        _mm512_storeu_ps(t.partial + (a * kMaxTileB + b) * kLanes, acc[a][b]);
      }
    }
    return;
  }
  // Reduce in groups of four accumulators (row-major over the tile).
  float sums[A * B];
  const __m512* v = &acc[0][0];
  int i = 0;
#pragma GCC unroll 6
  for (; i + 4 <= A * B; i += 4) _mm_storeu_ps(sums + i, Hsum4(v[i], v[i + 1], v[i + 2], v[i + 3]));
#pragma GCC unroll 3
  for (; i < A * B; ++i) sums[i] = Hsum(v[i]);
#pragma GCC unroll 4
  for (int a = 0; a < A; ++a) {
#pragma GCC unroll 6
    for (int b = 0; b < B; ++b) {
      const float r = sums[a * B + b];
      t.y[a][b] = t.accumulate ? t.y[a][b] + r : r;
    }
  }
}

// Weight loaders: Load returns 16 exact f32 weights at column kk; LoadMasked
// zero-fills lanes outside the mask (the k tail). Step is called once per k step.
struct F32Rows {
  const float* w[kTileB];
  explicit F32Rows(const TileArgs& t) {
    for (int b = 0; b < kTileB; ++b) w[b] = static_cast<const float*>(t.w[b]);
  }
  template <int B>
  void Step(int64_t) {}
  __m512 Load(int b, int64_t kk) const { return _mm512_loadu_ps(w[b] + kk); }
  __m512 LoadMasked(int b, int64_t kk, __mmask16 m) const {
    return _mm512_maskz_loadu_ps(m, w[b] + kk);
  }
};

struct Bf16Rows {
  const uint16_t* w[kTileB];
  explicit Bf16Rows(const TileArgs& t) {
    for (int b = 0; b < kTileB; ++b) w[b] = static_cast<const uint16_t*>(t.w[b]);
  }
  template <int B>
  void Step(int64_t) {}
  static __m512 Widen(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  __m512 Load(int b, int64_t kk) const {
    return Widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b] + kk)));
  }
  __m512 LoadMasked(int b, int64_t kk, __mmask16 m) const {
    return Widen(_mm256_maskz_loadu_epi16(m, w[b] + kk));
  }
};

// e4m3 -> f16 by moving the 7 magnitude bits to f16 bit 7 (exact, subnormals
// included, value scaled by 2^-8), then vcvtph2ps; the 2^8 is folded into the
// block scale, so each weight is f8 * scale rounded once, exactly WeightMatrix::At.
// (The NaN codes 0x7f/0xff decode as +-480 * scale here, not NaN: checkpoints
// never contain them, and the panel path in matmul_cpu.cc does the same.)
template <bool kVecScales>
struct F8Rows {
  const uint8_t* w[kTileB];
  const float* scales[kTileB];
  // Small tiles have registers to spare for the broadcast scales; big ones
  // broadcast from memory each step instead.
  float scale[kTileB] = {};
  __m512 vscale[kVecScales ? kTileB : 1];
  int64_t block_cols, next_block = 0;
  explicit F8Rows(const TileArgs& t) : block_cols(t.block_cols) {
    for (int b = 0; b < kTileB; ++b) {
      w[b] = static_cast<const uint8_t*>(t.w[b]);
      scales[b] = t.scales[b];
    }
  }
  template <int B>
  void Step(int64_t kk) {
    if (kk < next_block) return;
    const int64_t kb = kk / block_cols;  // once per block: block_cols % 16 == 0
    next_block = (kb + 1) * block_cols;
#pragma GCC unroll 6
    for (int b = 0; b < B; ++b) {
      scale[b] = scales[b][kb] * 256.0f;
      if constexpr (kVecScales) vscale[b] = _mm512_set1_ps(scale[b]);
    }
  }
  // Sign-extending to 16 bits and shifting by 7 puts the sign at bit 15 and
  // the magnitude at bits 13..7; bit 14 (a copy of the sign) is masked off.
  static __m512 Widen(__m128i q, __m512 s) {
    const __m256i h = _mm256_and_si256(_mm256_slli_epi16(_mm256_cvtepi8_epi16(q), 7),
                                       _mm256_set1_epi16(static_cast<int16_t>(0xbf80)));
    return _mm512_mul_ps(_mm512_cvtph_ps(h), s);
  }
  __m512 Scale(int b) const {
    if constexpr (kVecScales) {
      return vscale[b];
    } else {
      return _mm512_set1_ps(scale[b]);
    }
  }
  __m512 Load(int b, int64_t kk) const {
    return Widen(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[b] + kk)), Scale(b));
  }
  __m512 LoadMasked(int b, int64_t kk, __mmask16 m) const {
    return Widen(_mm_maskz_loadu_epi8(m, w[b] + kk), Scale(b));
  }
};

// Per output: one 16-lane accumulator, lane l sums columns l, l+16, ... in k
// order with FMA; the tail is a masked step (zeros); then Hsum.
template <int A, int B, class L>
inline void F32Tile(const TileArgs& t) {
  L wl(t);
  const float* x[A];
#pragma GCC unroll 4
  for (int a = 0; a < A; ++a) x[a] = static_cast<const float*>(t.x[a]);
  __m512 acc[A][B];
  LoadAcc<A, B>(t, acc);
  const int64_t k = t.k_end;
  int64_t kk = t.k_begin;
  NextTilePrefetch pf(t, (k - kk) / kLanes);
  for (; kk + kLanes <= k; kk += kLanes) {
    pf.Step();
    wl.template Step<B>(kk);
    __m512 wv[B];
#pragma GCC unroll 6
    for (int b = 0; b < B; ++b) wv[b] = wl.Load(b, kk);
#pragma GCC unroll 4
    for (int a = 0; a < A; ++a) {
      const __m512 xv = _mm512_loadu_ps(x[a] + kk);
#pragma GCC unroll 6
      for (int b = 0; b < B; ++b) acc[a][b] = _mm512_fmadd_ps(xv, wv[b], acc[a][b]);
    }
  }
  if (kk < k) {
    const __mmask16 mask = _cvtu32_mask16((1u << (k - kk)) - 1u);
    wl.template Step<B>(kk);
    __m512 wv[B];
#pragma GCC unroll 6
    for (int b = 0; b < B; ++b) wv[b] = wl.LoadMasked(b, kk, mask);
#pragma GCC unroll 4
    for (int a = 0; a < A; ++a) {
      const __m512 xv = _mm512_maskz_loadu_ps(mask, x[a] + kk);
#pragma GCC unroll 6
      for (int b = 0; b < B; ++b) acc[a][b] = _mm512_fmadd_ps(xv, wv[b], acc[a][b]);
    }
  }
  StoreTile<A, B>(t, acc);
}

template <int A, int B>
struct F32Kernel {
  static void Run(const TileArgs& t) { F32Tile<A, B, F32Rows>(t); }
};
template <int A, int B>
struct Bf16WKernel {
  static void Run(const TileArgs& t) { F32Tile<A, B, Bf16Rows>(t); }
};
template <int A, int B>
struct F8WKernel {
  static void Run(const TileArgs& t) { F32Tile<A, B, F8Rows<(A <= 2)>>(t); }
};

// vdpbf16ps: lane l accumulates the pairs (2l+1, 2l) of every 32-column step,
// products exact in f32; x was rounded to bf16 once by the driver.
template <int A, int B>
struct DpBf16Kernel {
  static void Run(const TileArgs& t) {
    const uint16_t* x[A];
    const uint16_t* w[B];
#pragma GCC unroll 4
    for (int a = 0; a < A; ++a) x[a] = static_cast<const uint16_t*>(t.x[a]);
#pragma GCC unroll 6
    for (int b = 0; b < B; ++b) w[b] = static_cast<const uint16_t*>(t.w[b]);
    __m512 acc[A][B];
    LoadAcc<A, B>(t, acc);
    const int64_t k = t.k_end;
    int64_t kk = t.k_begin;
    NextTilePrefetch pf(t, (k - kk) / (2 * kLanes));
    for (; kk + 2 * kLanes <= k; kk += 2 * kLanes) {
      pf.Step();
      __m512i wv[B];
#pragma GCC unroll 6
      for (int b = 0; b < B; ++b) wv[b] = _mm512_loadu_si512(w[b] + kk);
#pragma GCC unroll 4
      for (int a = 0; a < A; ++a) {
        const __m512i xv = _mm512_loadu_si512(x[a] + kk);
#pragma GCC unroll 6
        for (int b = 0; b < B; ++b) {
          acc[a][b] = _mm512_dpbf16_ps(acc[a][b], (__m512bh)xv, (__m512bh)wv[b]);
        }
      }
    }
    if (kk < k) {
      const __mmask32 mask = _cvtu32_mask32(static_cast<uint32_t>((uint64_t{1} << (k - kk)) - 1));
      __m512i wv[B];
#pragma GCC unroll 6
      for (int b = 0; b < B; ++b) wv[b] = _mm512_maskz_loadu_epi16(mask, w[b] + kk);
#pragma GCC unroll 4
      for (int a = 0; a < A; ++a) {
        const __m512i xv = _mm512_maskz_loadu_epi16(mask, x[a] + kk);
#pragma GCC unroll 6
        for (int b = 0; b < B; ++b) {
          acc[a][b] = _mm512_dpbf16_ps(acc[a][b], (__m512bh)xv, (__m512bh)wv[b]);
        }
      }
    }
    StoreTile<A, B>(t, acc);
  }
};

constexpr TileKernels BuildKernels() {
  TileKernels t;
  t.max_a = kTileA;
  t.max_b = kTileB;
  t.lanes = kLanes;
  FillTileKind<F32Kernel, kTileA, kTileB>(t, kTileF32);
  FillTileKind<Bf16WKernel, kTileA, kTileB>(t, kTileBf16W);
  FillTileKind<F8WKernel, kTileA, kTileB>(t, kTileF8W);
  FillTileKind<DpBf16Kernel, kTileA, kTileB>(t, kTileDpBf16);
  return t;
}

constexpr TileKernels kKernels = BuildKernels();

// Packed-tile line loaders: rows 0-15 and 16-31 of one k-line as f32. A
// loader is made per call; BeginBlock(kb) runs before k lines [kb * block,
// (kb + 1) * block) of a tile (one block of all k for unscaled kinds).
struct Bf16Lines {  // low / high halves of the 16 words of a 64-byte line
  using Elem = uint16_t;
  explicit Bf16Lines(const PackedTileArgs&) {}
  static int64_t Block(const PackedTileArgs& t) { return t.k; }
  void BeginBlock(int64_t) {}
  static void Load(const uint16_t* line, __m512& lo, __m512& hi) {
    const __m512i v = _mm512_loadu_si512(line);
    lo = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    hi = _mm512_castsi512_ps(
        _mm512_and_si512(v, _mm512_set1_epi32(static_cast<int32_t>(0xffff0000u))));
  }
};
struct F32Lines {
  using Elem = float;
  explicit F32Lines(const PackedTileArgs&) {}
  static int64_t Block(const PackedTileArgs& t) { return t.k; }
  void BeginBlock(int64_t) {}
  static void Load(const float* line, __m512& lo, __m512& hi) {
    lo = _mm512_loadu_ps(line);
    hi = _mm512_loadu_ps(line + 16);
  }
};
// 32 e4m3 codes at a time, widened as F8ToF16Div256 does 8 (matmul_tiles.h),
// times scale * 256: each weight is WeightMatrix::At exactly. Packed codes
// are never NaN (see kF8Tiles32). (Building f32 bits directly from the code is
// two instructions shorter but turns subnormal codes into f32 denormals,
// which the multiply by the scale then takes a microcode assist on: 30x
// slower per vector here. vcvtph2ps widens f16 subnormals at full speed.)
struct F8Lines {
  using Elem = uint8_t;
  const float* scales;
  __m512 scale_lo, scale_hi;
  explicit F8Lines(const PackedTileArgs& t) : scales(t.scales) {}
  static int64_t Block(const PackedTileArgs& t) { return t.block_cols; }
  void BeginBlock(int64_t kb) {
    const __m512 to_f16 = _mm512_set1_ps(256.0f);
    scale_lo = _mm512_mul_ps(_mm512_loadu_ps(scales + kb * 32), to_f16);
    scale_hi = _mm512_mul_ps(_mm512_loadu_ps(scales + kb * 32 + 16), to_f16);
  }
  void Load(const uint8_t* line, __m512& lo, __m512& hi) const {
    const __m256i codes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(line));
    const __m512i h = _mm512_and_si512(_mm512_slli_epi16(_mm512_cvtepi8_epi16(codes), 7),
                                       _mm512_set1_epi16(static_cast<int16_t>(0xbf80)));
    lo = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(h)), scale_lo);
    hi = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1)), scale_hi);
  }
};

// Packed tile: lanes are W rows, so each k step loads one line as rows 0-15
// and 16-31 and broadcasts one x value per row of x. No horizontal sums; y
// is written once at the end.
template <int A, class L>
void PackedTile(const PackedTileArgs& t) {
  // Rows 4g..4g+3 are read from base[g] at 0, 1, 2 and 3 strides: every
  // address is a base register plus a scaled stride register.
  const int64_t xs = t.x_stride, xs3 = 3 * t.x_stride;
  const float* base[3] = {t.x, A > 4 ? t.x + 4 * xs : t.x, A > 8 ? t.x + 8 * xs : t.x};
  __m512 lo[A], hi[A];
#pragma GCC unroll 12
  for (int a = 0; a < A; ++a) lo[a] = hi[a] = _mm512_setzero_ps();
  const int64_t ahead = t.prefetch_ahead / static_cast<int64_t>(sizeof(typename L::Elem));
  L lines(t);
  ForEachPackedLine(t, lines, [&](int64_t, const typename L::Elem* w) {
    if (ahead != 0) PrefetchLine(w + ahead);
    __m512 w_lo, w_hi;
    lines.Load(w, w_lo, w_hi);
#pragma GCC unroll 12
    for (int a = 0; a < A; ++a) {
      const float* b = base[a / 4];
      const int r = a % 4;
      const __m512 xv = _mm512_set1_ps(r == 0   ? b[0]
                                       : r == 1 ? b[xs]
                                       : r == 2 ? b[2 * xs]
                                                : b[xs3]);
      lo[a] = _mm512_fmadd_ps(xv, w_lo, lo[a]);
      hi[a] = _mm512_fmadd_ps(xv, w_hi, hi[a]);
    }
    ++base[0], ++base[1], ++base[2];
  });
  const __mmask16 m_lo = _cvtu32_mask16(t.cols >= 16 ? 0xffffu : (1u << t.cols) - 1u);
  const __mmask16 m_hi = _cvtu32_mask16(t.cols >= 32  ? 0xffffu
                                        : t.cols > 16 ? (1u << (t.cols - 16)) - 1u
                                                      : 0u);
#pragma GCC unroll 12
  for (int a = 0; a < A; ++a) {
    float* y = t.y[a];
    if (t.accumulate) {
      lo[a] = _mm512_add_ps(_mm512_maskz_loadu_ps(m_lo, y), lo[a]);
      hi[a] = _mm512_add_ps(_mm512_maskz_loadu_ps(m_hi, y + 16), hi[a]);
    }
    _mm512_mask_storeu_ps(y, m_lo, lo[a]);
    _mm512_mask_storeu_ps(y + 16, m_hi, hi[a]);
  }
}

// One x row, two adjacent tiles read side by side (see PackedKernels::pair):
// each output is the same FMA chain as in PackedTile<1>.
template <class L>
void PackedTilePair(const PackedTileArgs& t) {
  PackedTileArgs second = t;
  const int64_t block = L::Block(t);
  const int64_t blocks = block > 0 ? (t.k + block - 1) / block : 0;
  second.w = static_cast<const typename L::Elem*>(t.w) + t.k * 32;
  if (t.scales != nullptr) second.scales = t.scales + blocks * 32;
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                   _mm512_setzero_ps()};
  const auto* w0 = static_cast<const typename L::Elem*>(t.w);
  const auto* w1 = static_cast<const typename L::Elem*>(second.w);
  const int64_t ahead = t.prefetch_ahead / static_cast<int64_t>(sizeof(typename L::Elem));
  L lines0(t), lines1(second);
  const float* x = t.x;
  for (int64_t k0 = 0, kb = 0; k0 < t.k; k0 += block, ++kb) {
    lines0.BeginBlock(kb);
    lines1.BeginBlock(kb);
    const int64_t k1 = t.k - k0 < block ? t.k : k0 + block;
    for (int64_t kk = k0; kk < k1; ++kk, w0 += 32, w1 += 32) {
      if (ahead != 0) {
        PrefetchLine(w0 + ahead);
        PrefetchLine(w1 + ahead);
      }
      __m512 v[4];
      lines0.Load(w0, v[0], v[1]);
      lines1.Load(w1, v[2], v[3]);
      const __m512 xv = _mm512_set1_ps(x[kk]);
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) acc[i] = _mm512_fmadd_ps(xv, v[i], acc[i]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    const int valid = t.cols - 16 * i;
    if (valid <= 0) break;
    const __mmask16 m = _cvtu32_mask16(valid >= 16 ? 0xffffu : (1u << valid) - 1u);
    float* y = t.y[0] + 16 * i;
    if (t.accumulate) acc[i] = _mm512_add_ps(_mm512_maskz_loadu_ps(m, y), acc[i]);
    _mm512_mask_storeu_ps(y, m, acc[i]);
  }
}

constexpr PackedKernels BuildPackedKernels() {
  PackedKernels p;
  // 12 x 2 accumulators + 2 W vectors + 1 x = 27 zmm (F8: + 2 scales + 1 mask)
  p.max_a[kPackedBf16] = p.max_a[kPackedF32] = p.max_a[kPackedF8] = kMaxPackedA;
  [&]<int... I>(std::integer_sequence<int, I...>) {
    ((p.fn[kPackedBf16][I] = &PackedTile<I + 1, Bf16Lines>), ...);
    ((p.fn[kPackedF32][I] = &PackedTile<I + 1, F32Lines>), ...);
    ((p.fn[kPackedF8][I] = &PackedTile<I + 1, F8Lines>), ...);
  }
  (std::make_integer_sequence<int, kMaxPackedA>{});
  p.pair[kPackedBf16] = &PackedTilePair<Bf16Lines>;
  p.pair[kPackedF32] = &PackedTilePair<F32Lines>;
  p.pair[kPackedF8] = &PackedTilePair<F8Lines>;
  return p;
}

constexpr PackedKernels kPackedKernels = BuildPackedKernels();

}  // namespace

const TileKernels& Avx512TileKernels() { return kKernels; }
const PackedKernels& Avx512PackedKernels() { return kPackedKernels; }

}  // namespace xpd::kernels::matmul_internal
