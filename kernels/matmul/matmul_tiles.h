// Register-tile kernel interface shared by the MatMulCpu driver and the per-ISA
// kernel files. Deliberately free of library headers: the AVX-512 file includes
// it, and nothing compiled there may be shared (inline, static init) with
// code that runs on AVX2-only CPUs.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <utility>

namespace xpd::kernels::matmul_internal {

inline constexpr int kMaxTileA = 4;   // x rows per register tile
inline constexpr int kMaxTileB = 6;   // W rows per register tile
inline constexpr int kMaxLanes = 16;  // f32 lanes of the widest kernels

// One register tile: for a < A, b < B,
//   y[a][b] = dot(x[a][0:k], W_b[0:k])   (or += with accumulate)
// Every kernel of a kind computes each output with the same per-lane k loop
// and the same horizontal sum whatever A and B are: this is what makes the
// results independent of tiling (batch invariance).
struct TileArgs {
  const void* x[kMaxTileA];        // f32 rows, or bf16 rows for kDpBf16
  const void* w[kMaxTileB];        // weight rows in the kind's element type
  const float* scales[kMaxTileB];  // kF8W: the block-scale row of each W row
  float* y[kMaxTileA];             // &y[row][first column of the tile]
  // This call covers columns [k_begin, k_end) of k: k may be split into chunks
  // for cache blocking; every chunk but the last has a multiple of 32 columns.
  int64_t k_begin = 0;
  int64_t k_end = 0;
  // Chunked calls carry the per-output accumulator vectors between chunks in
  // `partial` ([kMaxTileA][kMaxTileB][lanes] floats): a stored and reloaded
  // vector is exact, so chunking does not change any result bit.
  float* partial = nullptr;  // unused when first_chunk && last_chunk
  bool first_chunk = true;   // start from zero (else from partial)
  bool last_chunk = true;    // reduce and write y (else save to partial)
  int32_t block_cols = 0;    // kF8W: multiple of the kernel's lane count
  bool accumulate = false;
  // Memory-bound (few x rows) calls: the next W tile, prefetched into the
  // caches a few lines per k step while this one computes, so that the six
  // short row streams of a tile never wait on the hardware prefetcher.
  const char* prefetch = nullptr;
  int64_t prefetch_bytes = 0;
};
using TileFn = void (*)(const TileArgs&);

enum TileKind : int {
  kTileF32 = 0,  // x f32, W f32 (F32 weights or a dequantized panel)
  kTileBf16W,    // x f32, W bf16 widened in registers
  kTileF8W,      // x f32, W e4m3 widened and scaled in registers
  kTileDpBf16,   // x bf16, W bf16, vdpbf16ps (AVX512_BF16 only)
  kNumTileKinds,
};

struct TileKernels {
  int max_a = 0;
  int max_b = 0;
  int lanes = 0;  // f32 lanes per vector; kF8W needs block_cols % lanes == 0
  TileFn fn[kNumTileKinds][kMaxTileA][kMaxTileB] = {};  // [kind][A-1][B-1], null if absent
};

const TileKernels& Avx2TileKernels();
const TileKernels& Avx512TileKernels();  // only callable after a CPU check

// Packed weights (WeightLayout::kBf16Tiles32, kF32Tiles32, kF8Tiles32): one call computes
// up to 32 outputs (one W tile) for A x rows. Every output is one FMA chain over k
// in order, starting from zero, so results depend on nothing but k: not on A,
// the tile's position, the thread split or the ISA (AVX2 and AVX-512 agree
// bit for bit). Lanes run over W rows, so there is no horizontal sum.
inline constexpr int kMaxPackedA = 12;

struct PackedTileArgs {
  // Row a of the x tile (f32, already rounded for kBF16) is x + a * x_stride:
  // one pointer and a stride, because the 12-row kernel has too few general
  // registers to keep twelve row pointers and spilled them in its inner loop.
  const float* x = nullptr;
  int64_t x_stride = 0;
  float* y[kMaxPackedA];    // &y[row][first output of the tile]
  const void* w = nullptr;  // the tile: k lines of 32 weights (bf16 or f32)
  int64_t k = 0;
  int cols = 0;  // valid outputs in this tile, 1..32 (the rest are padding)
  bool accumulate = false;
  // Each k step prefetches the k-line this many bytes past the one it reads
  // (0: none). The driver uses it to run a few KB ahead of a memory-bound
  // stream (past the page boundaries where the hardware prefetcher stops),
  // and to fetch the next W tile while a compute-bound block works on this
  // one. (One offset, not a pointer and a pace: the 12-row kernel needs its
  // general registers for the x rows.)
  int64_t prefetch_ahead = 0;
  // kPackedF8: the tile's scale lines, 32 floats per block of block_cols k
  // lines (see kF8Tiles32 in weight_matrix.h). Each weight is widened to
  // code * scale rounded once, WeightMatrix::At exactly, so the FMA chains
  // equal those of the same tile widened to F32 lines.
  const float* scales = nullptr;
  int64_t block_cols = 0;
};
using PackedTileFn = void (*)(const PackedTileArgs&);

enum PackedKind : int { kPackedBf16 = 0, kPackedF32, kPackedF8, kNumPackedKinds };

struct PackedKernels {
  int max_a[kNumPackedKinds] = {};                     // each divides kMaxPackedA
  PackedTileFn fn[kNumPackedKinds][kMaxPackedA] = {};  // [kind][A-1], null past max_a
  // One x row against two adjacent tiles: t.w and the tile after it (for
  // kPackedF8 their scale lines follow each other too), 64 outputs from
  // t.y[0], t.cols of them valid. A lone row has one FMA chain per 16
  // outputs and is bound by its latency; two streams and four chains are
  // not. Null: tiles run one at a time.
  PackedTileFn pair[kNumPackedKinds] = {};
};

const PackedKernels& Avx2PackedKernels();
const PackedKernels& Avx512PackedKernels();  // only callable after a CPU check

// Internal linkage on purpose: each kernel file gets its own copy, compiled
// for its ISA (see the top of this file).
namespace {

// Sets t.fn[kind][A-1][B-1] to K<A, B>::Run for every A <= MaxA, B <= MaxB
// (the tiles a kernel file's registers hold); larger tiles stay null.
template <template <int, int> class K, int MaxA, int MaxB>
constexpr void FillTileKind(TileKernels& t, int kind) {
  [&]<int... I>(std::integer_sequence<int, I...>) {
    ((t.fn[kind][I / kMaxTileB][I % kMaxTileB] =
          [] {
            constexpr int a = I / kMaxTileB + 1, b = I % kMaxTileB + 1;
            if constexpr (a <= MaxA && b <= MaxB) {
              return &K<a, b>::Run;
            } else {
              return static_cast<TileFn>(nullptr);
            }
          }()),
     ...);
  }
  (std::make_integer_sequence<int, kMaxTileA * kMaxTileB>{});
}

// Spreads the prefetch of TileArgs::prefetch evenly over the k steps of one
// kernel call, so the next tile arrives as this one finishes.
class NextTilePrefetch {
 public:
  NextTilePrefetch(const TileArgs& t, int64_t steps) {
    if (t.prefetch == nullptr || steps <= 0) return;
    p_ = t.prefetch;
    end_ = p_ + t.prefetch_bytes;
    step_bytes_ = (t.prefetch_bytes / steps + 63) / 64 * 64;
  }
  void Step() {
    const char* stop = end_ - p_ < step_bytes_ ? end_ : p_ + step_bytes_;
    for (; p_ < stop; p_ += 64) _mm_prefetch(p_, _MM_HINT_T0);
  }

 private:
  const char* p_ = nullptr;
  const char* end_ = nullptr;
  int64_t step_bytes_ = 0;
};

// Calls line(kk, w) for the k lines of one packed tile in order, and
// lines.BeginBlock(kb) before each block of L::Block(t) lines (an FP8 scale
// block; all of k for the other kinds).
template <class L, class LineFn>
[[gnu::always_inline]] inline void ForEachPackedLine(const PackedTileArgs& t, L& lines,
                                                     LineFn&& line) {
  const auto* w = static_cast<const typename L::Elem*>(t.w);
  const int64_t block = L::Block(t);
  for (int64_t k0 = 0, kb = 0; k0 < t.k; k0 += block, ++kb) {
    lines.BeginBlock(kb);
    const int64_t k1 = t.k - k0 < block ? t.k : k0 + block;
    for (int64_t kk = k0; kk < k1; ++kk, w += 32) line(kk, w);
  }
}

// 8 e4m3 codes (the low 8 bytes of `codes`) -> 8 f16 holding code / 256,
// exactly, subnormals included: sign-extended to 16 bits and shifted left by
// 7, the sign lands on bit 15 and the 7 magnitude bits on bits 13..7; bit 14
// (a copy of the sign) is masked off. Times scale * 256 in f32, each weight
// is code * scale rounded once, as WeightMatrix::At computes it. (NaN codes
// read as +-480 here.) The AVX-512 kernels do the same 16 or 32 codes wide.
inline __m128i F8ToF16Div256(__m128i codes) {
  return _mm_and_si128(_mm_slli_epi16(_mm_cvtepi8_epi16(codes), 7),
                       _mm_set1_epi16(static_cast<int16_t>(0xbf80)));
}

// Prefetches one packed k-line: one cache line of BF16, two of F32.
template <typename Elem>
inline void PrefetchLine(const Elem* line) {
  _mm_prefetch(reinterpret_cast<const char*>(line), _MM_HINT_T0);
  if constexpr (sizeof(Elem) == 4)
    _mm_prefetch(reinterpret_cast<const char*>(line) + 64, _MM_HINT_T0);
}

}  // namespace
}  // namespace xpd::kernels::matmul_internal
