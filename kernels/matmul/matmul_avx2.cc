// AVX2+FMA+F16C register-tile kernels: the portable baseline path. Same
// structure as matmul_avx512.cc with 8 lanes and a 4x3 tile (16 ymm registers).

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/matmul/matmul_tiles.h"

namespace xpd::kernels::matmul_internal {
namespace {

constexpr int kLanes = 8;
constexpr int kTileA = 4;  // 4x3 accumulators + 3 W vectors + 1 x vector = 16 ymm
constexpr int kTileB = 3;

// -1 for the first r lanes of (kMaskTable + 8 - r), 0 after: tail masks.
alignas(64) constexpr int32_t kMaskTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                                0,  0,  0,  0,  0,  0,  0,  0};

inline __m256i TailMask(int64_t r) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskTable + kLanes - r));
}

// The one horizontal-sum order used by every kernel of this file.
inline float Hsum(__m256 v) {
  __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
  return _mm_cvtss_f32(s4);
}

template <int A, int B>
inline void LoadAcc(const TileArgs& t, __m256 (&acc)[A][B]) {
#pragma GCC unroll 4
  for (int a = 0; a < A; ++a) {
#pragma GCC unroll 3
    for (int b = 0; b < B; ++b) {
      acc[a][b] = t.first_chunk ? _mm256_setzero_ps()
                                : _mm256_loadu_ps(t.partial + (a * kMaxTileB + b) * kLanes);
    }
  }
}

template <int A, int B>
inline void StoreTile(const TileArgs& t, __m256 (&acc)[A][B]) {
  if (!t.last_chunk) {
#pragma GCC unroll 4
    for (int a = 0; a < A; ++a) {
#pragma GCC unroll 3
      for (int b = 0; b < B; ++b) {
        _mm256_storeu_ps(t.partial + (a * kMaxTileB + b) * kLanes, acc[a][b]);
      }
    }
    return;
  }
#pragma GCC unroll 4
  for (int a = 0; a < A; ++a) {
#pragma GCC unroll 3
    for (int b = 0; b < B; ++b) {
      const float r = Hsum(acc[a][b]);
      t.y[a][b] = t.accumulate ? t.y[a][b] + r : r;
    }
  }
}

// Weight loaders: Load returns 8 exact f32 weights at column kk; LoadTail
// zero-fills lanes at and beyond r (the k tail).
struct F32Rows {
  const float* w[kTileB];
  explicit F32Rows(const TileArgs& t) {
    for (int b = 0; b < kTileB; ++b) w[b] = static_cast<const float*>(t.w[b]);
  }
  template <int B>
  void Step(int64_t) {}
  __m256 Load(int b, int64_t kk) const { return _mm256_loadu_ps(w[b] + kk); }
  __m256 LoadTail(int b, int64_t kk, int64_t r) const {
    return _mm256_maskload_ps(w[b] + kk, TailMask(r));
  }
};

struct Bf16Rows {
  const uint16_t* w[kTileB];
  explicit Bf16Rows(const TileArgs& t) {
    for (int b = 0; b < kTileB; ++b) w[b] = static_cast<const uint16_t*>(t.w[b]);
  }
  template <int B>
  void Step(int64_t) {}
  static __m256 Widen(__m128i h) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  __m256 Load(int b, int64_t kk) const {
    return Widen(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[b] + kk)));
  }
  __m256 LoadTail(int b, int64_t kk, int64_t r) const {
    uint16_t buf[kLanes] = {};
    std::memcpy(buf, w[b] + kk, r * sizeof(uint16_t));
    return Widen(_mm_loadu_si128(reinterpret_cast<const __m128i*>(buf)));
  }
};

// e4m3 -> f16 holding code / 256 (F8ToF16Div256) -> f32; the 2^8 is folded
// into the block scale so each weight equals WeightMatrix::At.
struct F8Rows {
  const uint8_t* w[kTileB];
  const float* scales[kTileB];
  float scale[kTileB] = {};
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
    const int64_t kb = kk / block_cols;  // once per block: block_cols % 8 == 0
    next_block = (kb + 1) * block_cols;
    for (int b = 0; b < B; ++b) scale[b] = scales[b][kb] * 256.0f;
  }
  static __m256 Widen(__m128i q, float s) {
    return _mm256_mul_ps(_mm256_cvtph_ps(F8ToF16Div256(q)), _mm256_set1_ps(s));
  }
  __m256 Load(int b, int64_t kk) const {
    return Widen(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(w[b] + kk)), scale[b]);
  }
  __m256 LoadTail(int b, int64_t kk, int64_t r) const {
    uint8_t buf[16] = {};
    std::memcpy(buf, w[b] + kk, r);
    return Widen(_mm_loadu_si128(reinterpret_cast<const __m128i*>(buf)), scale[b]);
  }
};

// Per output: one 8-lane accumulator, lane l sums columns l, l+8, ... in k
// order with FMA; the tail is a zero-padded step; then Hsum.
template <int A, int B, class L>
inline void F32Tile(const TileArgs& t) {
  L wl(t);
  const float* x[A];
#pragma GCC unroll 4
  for (int a = 0; a < A; ++a) x[a] = static_cast<const float*>(t.x[a]);
  __m256 acc[A][B];
  LoadAcc<A, B>(t, acc);
  const int64_t k = t.k_end;
  int64_t kk = t.k_begin;
  NextTilePrefetch pf(t, (k - kk) / kLanes);
  for (; kk + kLanes <= k; kk += kLanes) {
    pf.Step();
    wl.template Step<B>(kk);
    __m256 wv[B];
#pragma GCC unroll 3
    for (int b = 0; b < B; ++b) wv[b] = wl.Load(b, kk);
#pragma GCC unroll 4
    for (int a = 0; a < A; ++a) {
      const __m256 xv = _mm256_loadu_ps(x[a] + kk);
#pragma GCC unroll 3
      for (int b = 0; b < B; ++b) acc[a][b] = _mm256_fmadd_ps(xv, wv[b], acc[a][b]);
    }
  }
  if (kk < k) {
    const int64_t r = k - kk;
    wl.template Step<B>(kk);
    __m256 wv[B];
#pragma GCC unroll 3
    for (int b = 0; b < B; ++b) wv[b] = wl.LoadTail(b, kk, r);
#pragma GCC unroll 4
    for (int a = 0; a < A; ++a) {
      const __m256 xv = _mm256_maskload_ps(x[a] + kk, TailMask(r));
#pragma GCC unroll 3
      for (int b = 0; b < B; ++b) acc[a][b] = _mm256_fmadd_ps(xv, wv[b], acc[a][b]);
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
  static void Run(const TileArgs& t) { F32Tile<A, B, F8Rows>(t); }
};

constexpr TileKernels BuildKernels() {
  TileKernels t;
  t.max_a = kTileA;
  t.max_b = kTileB;
  t.lanes = kLanes;
  FillTileKind<F32Kernel, kTileA, kTileB>(t, kTileF32);
  FillTileKind<Bf16WKernel, kTileA, kTileB>(t, kTileBf16W);
  FillTileKind<F8WKernel, kTileA, kTileB>(t, kTileF8W);
  return t;  // no kTileDpBf16: kBF16 precision rounds x and uses kTileF32/kTileBf16W
}

constexpr TileKernels kKernels = BuildKernels();

// Packed tiles (see matmul_tiles.h). Half h of a line holds rows 8h..8h+7
// and 16+8h..16+8h+7 (for BF16, the low and high halves of words 8h..8h+7).
// Each output's FMA chain is the same as in the AVX-512 kernels, so the two
// ISAs agree bit for bit.
// A loader is made per call; BeginBlock(kb) runs before k lines [kb * block,
// (kb + 1) * block) of a tile (one block of all k for unscaled kinds).
struct Bf16Lines {
  using Elem = uint16_t;
  explicit Bf16Lines(const PackedTileArgs&) {}
  static int64_t Block(const PackedTileArgs& t) { return t.k; }
  void BeginBlock(int64_t) {}
  static void Load(const uint16_t* line, int half, __m256& lo, __m256& hi) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(line + half * 16));
    lo = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
    hi = _mm256_castsi256_ps(
        _mm256_and_si256(v, _mm256_set1_epi32(static_cast<int32_t>(0xffff0000u))));
  }
};
struct F32Lines {
  using Elem = float;
  explicit F32Lines(const PackedTileArgs&) {}
  static int64_t Block(const PackedTileArgs& t) { return t.k; }
  void BeginBlock(int64_t) {}
  static void Load(const float* line, int half, __m256& lo, __m256& hi) {
    lo = _mm256_loadu_ps(line + half * kLanes);
    hi = _mm256_loadu_ps(line + 16 + half * kLanes);
  }
};
// 8 e4m3 codes at a time via F8ToF16Div256, times scale * 256.
struct F8Lines {
  using Elem = uint8_t;
  const float* scales;
  __m256 scale[4];  // rows 0-7, 8-15, 16-23, 24-31
  explicit F8Lines(const PackedTileArgs& t) : scales(t.scales) {}
  static int64_t Block(const PackedTileArgs& t) { return t.block_cols; }
  void BeginBlock(int64_t kb) {
    for (int g = 0; g < 4; ++g) {
      scale[g] =
          _mm256_mul_ps(_mm256_loadu_ps(scales + kb * 32 + g * kLanes), _mm256_set1_ps(256.0f));
    }
  }
  static __m256 Widen(const uint8_t* codes, __m256 s) {
    const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes));
    return _mm256_mul_ps(_mm256_cvtph_ps(F8ToF16Div256(q)), s);
  }
  void Load(const uint8_t* line, int half, __m256& lo, __m256& hi) const {
    lo = Widen(line + half * kLanes, scale[half]);
    hi = Widen(line + 16 + half * kLanes, scale[2 + half]);
  }
};

inline void StorePackedGroup(const PackedTileArgs& t, float* y, int first_row, __m256 acc) {
  const int valid = std::clamp(t.cols - first_row, 0, kLanes);
  if (valid == 0) return;
  const __m256i mask = TailMask(valid);
  if (t.accumulate) acc = _mm256_add_ps(_mm256_maskload_ps(y + first_row, mask), acc);
  _mm256_maskstore_ps(y + first_row, mask, acc);
}

// Up to two x rows: the whole line per k step (four accumulators per row),
// so a GEMV reads each line once and has four FMA chains in flight.
template <int A, class L>
void PackedTileWholeLine(const PackedTileArgs& t) {
  __m256 acc[A][4];  // rows 0-7, 8-15, 16-23, 24-31
#pragma GCC unroll 2
  for (int a = 0; a < A; ++a) acc[a][0] = acc[a][1] = acc[a][2] = acc[a][3] = _mm256_setzero_ps();
  const int64_t ahead = t.prefetch_ahead / static_cast<int64_t>(sizeof(typename L::Elem));
  L lines(t);
  ForEachPackedLine(t, lines, [&](int64_t kk, const typename L::Elem* w) {
    if (ahead != 0) PrefetchLine(w + ahead);
    __m256 wv[4];
    lines.Load(w, 0, wv[0], wv[2]);
    lines.Load(w, 1, wv[1], wv[3]);
#pragma GCC unroll 2
    for (int a = 0; a < A; ++a) {
      const __m256 xv = _mm256_broadcast_ss(t.x + a * t.x_stride + kk);
#pragma GCC unroll 4
      for (int g = 0; g < 4; ++g) acc[a][g] = _mm256_fmadd_ps(xv, wv[g], acc[a][g]);
    }
  });
#pragma GCC unroll 2
  for (int a = 0; a < A; ++a) {
#pragma GCC unroll 4
    for (int g = 0; g < 4; ++g) StorePackedGroup(t, t.y[a], g * kLanes, acc[a][g]);
  }
}

// Three or more x rows: half a line per pass (the registers do not hold four
// accumulators per row), rows 8h..8h+7 and 16+8h..16+8h+7 in pass h.
template <int A, class L>
void PackedTileHalfLines(const PackedTileArgs& t) {
  for (int half = 0; half < 2; ++half) {
    __m256 lo[A], hi[A];
#pragma GCC unroll 6
    for (int a = 0; a < A; ++a) lo[a] = hi[a] = _mm256_setzero_ps();
    // The second half re-reads lines the first brought in.
    const int64_t ahead =
        half == 0 ? t.prefetch_ahead / static_cast<int64_t>(sizeof(typename L::Elem)) : 0;
    L lines(t);
    ForEachPackedLine(t, lines, [&](int64_t kk, const typename L::Elem* w) {
      if (ahead != 0) PrefetchLine(w + ahead);
      __m256 w_lo, w_hi;
      lines.Load(w, half, w_lo, w_hi);
#pragma GCC unroll 6
      for (int a = 0; a < A; ++a) {
        const __m256 xv = _mm256_broadcast_ss(t.x + a * t.x_stride + kk);
        lo[a] = _mm256_fmadd_ps(xv, w_lo, lo[a]);
        hi[a] = _mm256_fmadd_ps(xv, w_hi, hi[a]);
      }
    });
#pragma GCC unroll 6
    for (int a = 0; a < A; ++a) {
      StorePackedGroup(t, t.y[a], half * kLanes, lo[a]);
      StorePackedGroup(t, t.y[a], 16 + half * kLanes, hi[a]);
    }
  }
}

constexpr PackedKernels BuildPackedKernels() {
  PackedKernels p;
  // Half lines: BF16 4 x 2 accumulators + 2 W + 1 x + the widening mask =
  // 12 ymm; F32 6 x 2 + 2 W + 1 x = 15 ymm.
  p.max_a[kPackedBf16] = 4;
  p.max_a[kPackedF32] = 6;
  p.fn[kPackedBf16][0] = &PackedTileWholeLine<1, Bf16Lines>;
  p.fn[kPackedBf16][1] = &PackedTileWholeLine<2, Bf16Lines>;
  p.fn[kPackedBf16][2] = &PackedTileHalfLines<3, Bf16Lines>;
  p.fn[kPackedBf16][3] = &PackedTileHalfLines<4, Bf16Lines>;
  p.fn[kPackedF32][0] = &PackedTileWholeLine<1, F32Lines>;
  p.fn[kPackedF32][1] = &PackedTileWholeLine<2, F32Lines>;
  p.fn[kPackedF32][2] = &PackedTileHalfLines<3, F32Lines>;
  p.fn[kPackedF32][3] = &PackedTileHalfLines<4, F32Lines>;
  p.fn[kPackedF32][4] = &PackedTileHalfLines<5, F32Lines>;
  p.fn[kPackedF32][5] = &PackedTileHalfLines<6, F32Lines>;
  // F8: 4 x 2 accumulators + 2 W + 1 x + the widening mask + 2 scales = 14.
  p.max_a[kPackedF8] = 4;
  p.fn[kPackedF8][0] = &PackedTileWholeLine<1, F8Lines>;
  p.fn[kPackedF8][1] = &PackedTileWholeLine<2, F8Lines>;
  p.fn[kPackedF8][2] = &PackedTileHalfLines<3, F8Lines>;
  p.fn[kPackedF8][3] = &PackedTileHalfLines<4, F8Lines>;
  return p;
}

constexpr PackedKernels kPackedKernels = BuildPackedKernels();

}  // namespace

const TileKernels& Avx2TileKernels() { return kKernels; }
const PackedKernels& Avx2PackedKernels() { return kPackedKernels; }

}  // namespace xpd::kernels::matmul_internal
