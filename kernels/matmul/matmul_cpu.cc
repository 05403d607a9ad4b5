// MatMulCpu driver: picks the SIMD level, blocks the problem for the caches,
// prepares operands (x rounded to bf16, W widened into an f32 panel) and runs
// register-tile kernels from matmul_avx2.cc / matmul_avx512.cc over a ThreadPool.
// Packed weights (BF16 and FP8 packed at load, what the model runs; F32 tiles
// that attention lays out itself) take their own path: no panel, one kernel
// for every m (RunPacked).
// Measured against row-major BF16 in one matmul_bench run (`small`'s shapes,
// 2 threads): m = 1 22-24 vs 19-21 GB/s, m = 16 176-215 vs 110-129 GFLOP/s,
// m = 48 164-176 vs 124-136, m = 512 186-226 vs 149-188.
//
// Batch invariance: every output y[i][j] is produced by one tile kernel call
// whose per-output operation sequence depends only on k (never on the tile
// shape, the block sizes or the thread split), and operand preparation is
// exact or elementwise, so results do not depend on m, row position or threads.

#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/core/bf16_rounding.h"
#include "kernels/core/cpu_features.h"
#include "kernels/matmul/matmul.h"
#include "kernels/matmul/matmul_internal.h"

namespace xpd::kernels {
namespace matmul_internal {
namespace {

// Rows of x kept hot in L2 while the W tiles of a thread stream past them.
constexpr int64_t kL2BudgetBytes = 768 * 1024;
constexpr int64_t kMaxRowBlock = 512;
// Columns of one register tile's operands (4 x rows + 6 W rows) kept in L1
// across the x tiles of a block: k is split into chunks of about this size.
constexpr int64_t kL1TileBytes = 40 * 1024;
// Up to this many x rows, BF16/FP8 weights are widened in registers by every
// x tile rather than once into an f32 panel (measured: in-register widening
// wins up to ~16 rows, the panel wins for prefill).
constexpr int64_t kFusedMaxRows = 16;
// Up to this many x rows (the in-register widening range), W tiles are
// prefetched ahead (see TileArgs::prefetch); measured: +40-50% for one row,
// about +5% for 16.
constexpr int64_t kPrefetchMaxRows = kFusedMaxRows;
// How far ahead packed tiles are prefetched in that range (measured with
// matmul_bench at m = 1: 0 B 15-19 GB/s, 1-2 KB 21-23, 4 KB 23-26, 8 KB 23-24).
constexpr int64_t kPackedPrefetchBytes = 4096;
// W tiles a thread claims at a time when a compute-bound packed product is
// split over columns.
constexpr int64_t kTilesPerClaim = 4;
// Minimum multiply-adds per parallel chunk: below this, fork-join costs more
// than it saves.
constexpr int64_t kMinChunkMacs = 1 << 16;

int64_t RoundUp(int64_t v, int64_t to) { return (v + to - 1) / to * to; }

// Widens columns [c0, c1) of one row (src and dst indexed by column).
void WidenBf16Row(const uint16_t* src, int64_t c0, int64_t c1, float* dst) {
  int64_t c = c0;
  for (; c + 8 <= c1; c += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + c));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + c),
                        _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  for (; c < c1; ++c) dst[c] = Bf16ToF32(src[c]);
}

inline float F8Scalar(uint8_t b, float scale256) {
  return _cvtsh_ss(static_cast<uint16_t>(((b & 0x7f) << 7) | ((b & 0x80) << 8))) * scale256;
}

// Widens columns [c0, c1) of one FP8 row, scale block by scale block.
void WidenF8Row(const uint8_t* src, const float* scale_row, int64_t c0, int64_t c1,
                int64_t block_cols, float* dst) {
  for (int64_t b0 = c0; b0 < c1;) {
    const int64_t kb = b0 / block_cols;
    const int64_t b1 = std::min(c1, (kb + 1) * block_cols);
    const float s = scale_row[kb] * 256.0f;
    const __m256 vs = _mm256_set1_ps(s);
    int64_t c = b0;
    for (; c + 8 <= b1; c += 8) {
      const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + c));
      _mm256_storeu_ps(dst + c, _mm256_mul_ps(_mm256_cvtph_ps(F8ToF16Div256(q)), vs));
    }
    for (; c < b1; ++c) dst[c] = F8Scalar(src[c], s);
    b0 = b1;
  }
}

enum class XMode { kRaw, kRoundF32, kBf16 };

struct Plan {
  const MatMulArgs* args;
  const TileKernels* kernels;
  const PackedKernels* packed;  // set for the packed layouts
  PackedKind packed_kind;
  // AVX2 has too few registers to widen BF16 in the kernel at full FMA rate:
  // blocks of more than kFusedMaxRows rows widen each BF16 tile into F32
  // lines once and run the F32 kernel over it (exact: same values, same
  // FMA chains).
  bool widen_packed_bf16;
  int64_t m, n, k, x_stride, y_stride;
  XMode x_mode;
  TileKind direct_kind;  // kernel used on raw weight rows
  bool widen_w;          // BF16/FP8 weights may be widened into an f32 panel
  bool fused_ok;         // direct_kind can read the raw rows (else always widen)
  int64_t row_block;     // rows of x per block (multiple of max_a)
  int64_t k_chunk;       // columns per chunk when a block has several x tiles
};

// Per-thread scratch, grown on first use and reused across calls.
struct Scratch {
  std::vector<float> x_f32;
  std::vector<uint16_t> x_bf16;
  std::vector<float> panel;
  std::vector<float> partial;
  std::vector<float> x_shared;  // x rounded once for all threads (RunPacked)
};
thread_local Scratch t_scratch;

// Operand x for rows [i0, i0 + rows): raw, or rounded into the thread's
// scratch (buffers sized before any row pointer is taken).
void PrepareX(const Plan& p, int64_t i0, int64_t rows, int64_t ld, Scratch& s,
              const void** x_rows) {
  const MatMulArgs& args = *p.args;
  if (p.x_mode == XMode::kRoundF32 && s.x_f32.size() < static_cast<size_t>(rows * ld)) {
    s.x_f32.resize(rows * ld);
  }
  if (p.x_mode == XMode::kBf16 && s.x_bf16.size() < static_cast<size_t>(rows * ld)) {
    s.x_bf16.resize(rows * ld);
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = args.x + (i0 + r) * p.x_stride;
    switch (p.x_mode) {
      case XMode::kRaw:
        x_rows[r] = src;
        break;
      case XMode::kRoundF32:
        RoundRowToBf16F32(src, p.k, s.x_f32.data() + r * ld);
        x_rows[r] = s.x_f32.data() + r * ld;
        break;
      case XMode::kBf16:
        RoundRowToBf16(src, p.k, s.x_bf16.data() + r * ld);
        x_rows[r] = s.x_bf16.data() + r * ld;
        break;
    }
  }
}

// One kBf16Tiles32 tile -> the same tile as kF32Tiles32 lines (exact).
void WidenPackedBf16Tile(const uint16_t* tile, int64_t k, float* lines) {
  const __m256i high_halves = _mm256_set1_epi32(static_cast<int32_t>(0xffff0000u));
  for (int64_t kk = 0; kk < k; ++kk, tile += kPackedTileRows, lines += kPackedTileRows) {
    for (int half = 0; half < 2; ++half) {  // words 8h..8h+7: rows 8h.. and 16+8h..
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tile + half * 16));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(lines + half * 8), _mm256_slli_epi32(v, 16));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(lines + 16 + half * 8),
                          _mm256_and_si256(v, high_halves));
    }
  }
}

// One kF8Tiles32 tile -> the same tile as kF32Tiles32 lines, each weight
// widened exactly as the fused F8 kernels widen it (code / 256 as an f16,
// times scale * 256: WeightMatrix::At), so the F32 kernel then runs the same
// FMA chains.
void WidenPackedF8Tile(const uint8_t* tile, const float* scale_lines, int64_t k, int64_t block_cols,
                       float* lines) {
  for (int64_t k0 = 0, kb = 0; k0 < k; k0 += block_cols, ++kb) {
    __m256 scale[4];
    for (int g = 0; g < 4; ++g) {
      scale[g] = _mm256_mul_ps(_mm256_loadu_ps(scale_lines + kb * kPackedTileRows + g * 8),
                               _mm256_set1_ps(256.0f));
    }
    const int64_t k1 = std::min(k, k0 + block_cols);
    for (int64_t kk = k0; kk < k1; ++kk, tile += kPackedTileRows, lines += kPackedTileRows) {
      for (int g = 0; g < 4; ++g) {
        const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(tile + g * 8));
        _mm256_storeu_ps(lines + g * 8, _mm256_mul_ps(_mm256_cvtph_ps(F8ToF16Div256(q)), scale[g]));
      }
    }
  }
}

// Packed weights: rows [i0, i1) x W tiles [jt0, jt1). A tile (k lines of 32
// weights) is one stream: it comes from memory for the first x tile and from
// L2 for the others.
void RunPackedBlock(const Plan& p, int64_t i0, int64_t i1, int64_t jt0, int64_t jt1) {
  const MatMulArgs& args = *p.args;
  const PackedKernels& pk = *p.packed;
  Scratch& s = t_scratch;
  const int64_t rows = i1 - i0;
  const void* x_rows[kMaxRowBlock];
  const int64_t ld = RoundUp(std::max<int64_t>(p.k, 1), 32);
  PrepareX(p, i0, rows, ld, s, x_rows);
  PackedTileArgs t;
  t.x_stride = p.x_mode == XMode::kRaw ? p.x_stride : ld;  // as PrepareX lays the rows out
  t.k = p.k;
  t.accumulate = args.output == OutputMode::kAccumulate;
  const int64_t line_bytes = kPackedTileRows * DTypeSize(args.w->dtype);
  const int64_t tile_bytes = p.k * line_bytes;
  // Compute-bound blocks widen each BF16 (AVX2) or FP8 tile once and run the
  // F32 kernel over it rather than widening it again for every x tile.
  const bool widen =
      rows > kFusedMaxRows &&
      (p.packed_kind == kPackedF8 || (p.widen_packed_bf16 && p.packed_kind == kPackedBf16));
  const PackedKind kind = widen ? kPackedF32 : p.packed_kind;
  const int64_t max_a = pk.max_a[kind];
  if (widen && s.panel.size() < static_cast<size_t>(p.k * kPackedTileRows)) {
    s.panel.resize(p.k * kPackedTileRows);
  }
  const auto* w = static_cast<const char*>(args.w->data);
  const bool f8 = p.packed_kind == kPackedF8;
  const int64_t scale_line_floats = f8 ? args.w->scale_cols() * kPackedTileRows : 0;
  t.block_cols = args.w->block_cols;
  const PackedTileFn pair = rows == 1 && !widen ? pk.pair[kind] : nullptr;
  for (int64_t jt = jt0; jt < jt1; ++jt) {
    const int64_t j0 = jt * kPackedTileRows;
    t.w = w + jt * tile_bytes;
    t.scales = f8 ? args.w->block_scales + jt * scale_line_floats : nullptr;
    if (pair != nullptr && jt + 1 < jt1) {
      t.x = static_cast<const float*>(x_rows[0]);
      t.y[0] = args.y + i0 * p.y_stride + j0;
      t.cols = static_cast<int>(std::min<int64_t>(2 * kPackedTileRows, p.n - j0));
      t.prefetch_ahead = kPackedPrefetchBytes;
      pair(t);
      ++jt;
      continue;
    }
    t.cols = static_cast<int>(std::min<int64_t>(kPackedTileRows, p.n - j0));
    if (widen && f8) {
      WidenPackedF8Tile(static_cast<const uint8_t*>(t.w), t.scales, p.k, args.w->block_cols,
                        s.panel.data());
      t.w = s.panel.data();
    } else if (widen) {
      WidenPackedBf16Tile(static_cast<const uint16_t*>(t.w), p.k, s.panel.data());
      t.w = s.panel.data();
    }
    for (int64_t i = 0; i < rows; i += max_a) {
      const int na = static_cast<int>(std::min<int64_t>(max_a, rows - i));
      t.x = static_cast<const float*>(x_rows[i]);
      for (int a = 0; a < na; ++a) t.y[a] = args.y + (i0 + i + a) * p.y_stride + j0;
      if (rows <= kPrefetchMaxRows) {
        // Memory-bound: run a few KB ahead of the stream, one line per step.
        t.prefetch_ahead = kPackedPrefetchBytes;
      } else if (widen) {
        t.prefetch_ahead = 0;  // the widening pass streams W
      } else {
        // Compute-bound: the first x tile fetches the next W tile while the
        // block's other x tiles reuse this one from L2 (matmul_bench: m = 48
        // +10-40%, m = 512 +5-20%; spreading the fetch over all x tiles
        // measured the same).
        t.prefetch_ahead = i == 0 ? tile_bytes : 0;
      }
      pk.fn[kind][na - 1](t);
    }
  }
}

// Computes rows [i0, i1) x W-tiles [jt0, jt1).
void RunBlock(const Plan& p, int64_t i0, int64_t i1, int64_t jt0, int64_t jt1) {
  const MatMulArgs& args = *p.args;
  const WeightMatrix& w = *args.w;
  const TileKernels& kt = *p.kernels;
  Scratch& s = t_scratch;
  const int64_t rows = i1 - i0;
  const int64_t ld = RoundUp(std::max<int64_t>(p.k, 1), 32);
  const void* x_rows[kMaxRowBlock];
  PrepareX(p, i0, rows, ld, s, x_rows);
  // Widening W into a panel once per tile pays off when many x tiles reuse
  // it; small batches widen in registers instead (same values either way).
  const bool use_panel = p.widen_w && (rows > kFusedMaxRows || !p.fused_ok);
  const TileKind kind = use_panel ? kTileF32 : p.direct_kind;
  if (use_panel && s.panel.size() < static_cast<size_t>(kt.max_b * ld)) {
    s.panel.resize(kt.max_b * ld);
  }
  const int elem = DTypeSize(w.dtype);
  const int64_t scale_cols = w.dtype == DType::kF8E4M3 ? w.scale_cols() : 0;

  // Several x tiles reuse each W tile: split k so both stay in L1 (chunks
  // do not change results, see TileArgs::partial).
  const int64_t x_tiles = (rows + kt.max_a - 1) / kt.max_a;
  const int64_t k_chunk = x_tiles > 1 ? p.k_chunk : std::max<int64_t>(p.k, 1);
  constexpr int64_t kPartialStride = kMaxTileA * kMaxTileB * kMaxLanes;
  if (k_chunk < p.k && s.partial.size() < static_cast<size_t>(x_tiles * kPartialStride)) {
    s.partial.resize(x_tiles * kPartialStride);
  }

  const bool prefetch_w = !use_panel && rows <= kPrefetchMaxRows && p.k > 0;
  TileArgs t;
  t.block_cols = w.block_cols;
  t.accumulate = args.output == OutputMode::kAccumulate;
  for (int64_t jt = jt0; jt < jt1; ++jt) {
    const int64_t j0 = jt * kt.max_b;
    const int nb = static_cast<int>(std::min<int64_t>(kt.max_b, p.n - j0));
    for (int b = 0; b < nb; ++b) {
      const int64_t j = j0 + b;
      const void* row = static_cast<const char*>(w.data) + j * p.k * elem;
      const float* scale_row =
          w.dtype == DType::kF8E4M3 ? w.block_scales + (j / w.block_rows) * scale_cols : nullptr;
      t.w[b] = use_panel ? static_cast<const void*>(s.panel.data() + b * ld) : row;
      t.scales[b] = scale_row;
    }
    // Decode-sized blocks are bound by reading W: keep the tiles two ahead in
    // this thread's slice on their way into the caches (raw rows are
    // contiguous in W). The first tile also fetches the one after it. Each k
    // chunk's first x tile fetches the chunk's share of those bytes.
    const char* ahead = nullptr;
    int64_t ahead_bytes = 0;
    if (prefetch_w) {
      const int64_t from = (jt == jt0 ? jt + 1 : jt + 2) * kt.max_b;
      const int64_t to = std::min(p.n, std::min(jt + 3, jt1) * kt.max_b);
      if (from < to) {
        ahead = static_cast<const char*>(w.data) + from * p.k * elem;
        ahead_bytes = (to - from) * p.k * elem;
      }
    }
    for (int64_t c0 = 0;; c0 += k_chunk) {
      t.k_begin = c0;
      t.k_end = std::min(p.k, c0 + k_chunk);
      t.first_chunk = c0 == 0;
      t.last_chunk = t.k_end == p.k;
      // Widen just this chunk, so the panel is written and read while in L1.
      for (int b = 0; use_panel && b < nb; ++b) {
        const void* row = static_cast<const char*>(w.data) + (j0 + b) * p.k * elem;
        float* dst = s.panel.data() + b * ld;
        if (w.dtype == DType::kBF16) {
          WidenBf16Row(static_cast<const uint16_t*>(row), t.k_begin, t.k_end, dst);
        } else {
          WidenF8Row(static_cast<const uint8_t*>(row), t.scales[b], t.k_begin, t.k_end,
                     w.block_cols, dst);
        }
      }
      const int64_t ahead_begin = ahead ? ahead_bytes * t.k_begin / p.k : 0;
      t.prefetch_bytes = ahead ? ahead_bytes * t.k_end / p.k - ahead_begin : 0;
      for (int64_t i = 0; i < rows; i += kt.max_a) {
        t.prefetch = i == 0 && ahead != nullptr ? ahead + ahead_begin : nullptr;
        const int na = static_cast<int>(std::min<int64_t>(kt.max_a, rows - i));
        for (int a = 0; a < na; ++a) {
          t.x[a] = x_rows[i + a];
          t.y[a] = args.y + (i0 + i + a) * p.y_stride + j0;
        }
        t.partial = t.last_chunk && t.first_chunk
                        ? nullptr
                        : s.partial.data() + (i / kt.max_a) * kPartialStride;
        kt.fn[kind][na - 1][nb - 1](t);
      }
      if (t.last_chunk) break;
    }
  }
}

// Splits packed work like RunBlock's: over W tiles (each thread streams its own
// slice of W), or over row blocks when there are too few tiles to share.
void RunPacked(const Plan& p, ThreadPool& pool) {
  // Blocks are whole x tiles of every kernel (each max_a divides kMaxPackedA).
  const int64_t x_row_bytes = std::max<int64_t>(p.k, 1) * 4;
  const int64_t row_block =
      std::clamp<int64_t>(kL2BudgetBytes / x_row_bytes, kMaxPackedA, kMaxRowBlock) / kMaxPackedA *
      kMaxPackedA;
  const int64_t row_blocks = (p.m + row_block - 1) / row_block;
  const int64_t col_tiles = (p.n + kPackedTileRows - 1) / kPackedTileRows;
  const int threads = pool.num_threads();
  const int64_t k = std::max<int64_t>(p.k, 1);
  if (col_tiles < 2 * threads && row_blocks >= threads) {
    const int64_t grain = std::max<int64_t>(1, kMinChunkMacs / (row_block * p.n * k));
    pool.ParallelFor(row_blocks, grain, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        RunPackedBlock(p, b * row_block, std::min(p.m, (b + 1) * row_block), 0, col_tiles);
      }
    });
    return;
  }
  const int64_t grain = std::max<int64_t>(1, kMinChunkMacs / (p.m * kPackedTileRows * k));
  if (threads == 1 || p.m <= kPrefetchMaxRows) {
    // Memory-bound: each thread streams one contiguous slice of W.
    pool.ParallelFor(col_tiles, grain, [&](int64_t t0, int64_t t1) {
      for (int64_t i0 = 0; i0 < p.m; i0 += row_block) {
        RunPackedBlock(p, i0, std::min(p.m, i0 + row_block), t0, t1);
      }
    });
    return;
  }
  // Compute-bound: threads claim a few tiles at a time, so a core slowed by
  // a neighbour does not leave the other idle at the end. Every thread reads
  // every row of x: round x once here instead of once per claim.
  Plan q = p;
  MatMulArgs rounded_args;
  if (p.x_mode == XMode::kRoundF32) {
    const int64_t ld = RoundUp(k, 32);
    std::vector<float>& rounded = t_scratch.x_shared;
    if (rounded.size() < static_cast<size_t>(p.m * ld)) rounded.resize(p.m * ld);
    pool.ParallelFor(p.m, kMaxPackedA, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        RoundRowToBf16F32(p.args->x + r * p.x_stride, p.k, rounded.data() + r * ld);
      }
    });
    rounded_args = *p.args;
    rounded_args.x = rounded.data();
    q.args = &rounded_args;
    q.x_stride = ld;
    q.x_mode = XMode::kRaw;
  }
  pool.ParallelForDynamic(col_tiles, std::max(grain, kTilesPerClaim), [&](int64_t t0, int64_t t1) {
    for (int64_t i0 = 0; i0 < q.m; i0 += row_block) {
      RunPackedBlock(q, i0, std::min(q.m, i0 + row_block), t0, t1);
    }
  });
}

}  // namespace

Isa DetectIsa() {
  const CpuFeatures& f = GetCpuFeatures();
  if (f.HasAvx512Bf16()) return Isa::kAvx512Bf16;
  if (f.HasAvx512()) return Isa::kAvx512;
  return Isa::kAvx2;
}

Isa DefaultIsa() {
  static const Isa isa = [] {
    const char* bf16 = std::getenv("XPD_MATMUL_BF16");
    const bool dot = bf16 != nullptr && std::strcmp(bf16, "dot") == 0;
    return dot ? DetectIsa() : std::min(DetectIsa(), Isa::kAvx512);
  }();
  return isa;
}

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx512Bf16:
      return "avx512bf16";
  }
  return "?";
}

absl::Status MatMulCpuIsa(const MatMulArgs& args, ThreadPool& pool, Isa isa) {
  if (absl::Status s = ValidateMatMulArgs(args); !s.ok()) return s;
  isa = std::min(isa, DetectIsa());
  const WeightMatrix& w = *args.w;
  Plan p;
  p.args = &args;
  p.kernels = isa == Isa::kAvx2 ? &Avx2TileKernels() : &Avx512TileKernels();
  p.packed = nullptr;
  p.widen_packed_bf16 = isa == Isa::kAvx2;
  p.m = args.m;
  p.n = w.rows;
  p.k = w.cols;
  p.x_stride = args.x_stride ? args.x_stride : p.k;
  p.y_stride = args.y_stride ? args.y_stride : p.n;
  if (p.m == 0 || p.n == 0) return absl::OkStatus();
  const TileKernels& kt = *p.kernels;

  if (IsPacked(w.layout)) {
    p.packed = isa == Isa::kAvx2 ? &Avx2PackedKernels() : &Avx512PackedKernels();
    p.packed_kind = w.layout == WeightLayout::kBf16Tiles32 ? kPackedBf16
                    : w.layout == WeightLayout::kF8Tiles32 ? kPackedF8
                                                           : kPackedF32;
    p.x_mode = args.precision == Precision::kF32 || args.x_is_bf16 ? XMode::kRaw : XMode::kRoundF32;
    RunPacked(p, pool);
    return absl::OkStatus();
  }
  const bool dp = args.precision == Precision::kBF16 && isa == Isa::kAvx512Bf16;
  p.x_mode = args.precision == Precision::kF32 ? XMode::kRaw
             : dp                              ? XMode::kBf16
             : args.x_is_bf16                  ? XMode::kRaw
                                               : XMode::kRoundF32;
  p.widen_w = false;
  p.fused_ok = true;
  switch (w.dtype) {
    case DType::kF32:
      p.direct_kind = kTileF32;
      break;
    case DType::kBF16:
      p.direct_kind = dp ? kTileDpBf16 : kTileBf16W;
      p.widen_w = !dp;
      break;
    case DType::kF8E4M3:
      p.widen_w = true;
      p.direct_kind = kTileF8W;
      // A scale change inside a vector is not handled by the fused loader.
      p.fused_ok = w.block_cols % kt.lanes == 0;
      break;
  }

  const int64_t x_row_bytes = std::max<int64_t>(p.k, 1) * (p.x_mode == XMode::kBf16 ? 2 : 4);
  p.row_block = std::clamp<int64_t>(kL2BudgetBytes / x_row_bytes, kt.max_a, kMaxRowBlock);
  p.row_block = p.row_block / kt.max_a * kt.max_a;
  {
    const bool dp_operands = p.x_mode == XMode::kBf16;  // x and W both bf16
    const int64_t col_bytes = (kt.max_a + kt.max_b) * (dp_operands ? 2 : 4);
    const int64_t target = std::max<int64_t>(32, kL1TileBytes / col_bytes / 32 * 32);
    const int64_t chunks = std::max<int64_t>(1, (p.k + target - 1) / target);
    p.k_chunk = RoundUp((p.k + chunks - 1) / chunks, 32);
  }
  const int64_t row_blocks = (p.m + p.row_block - 1) / p.row_block;
  const int64_t col_tiles = (p.n + kt.max_b - 1) / kt.max_b;
  const int threads = pool.num_threads();

  // Split over W tiles (each thread streams its own slice of W, the usual case
  // and the only one for decode) unless there are too few of them to share.
  const bool split_rows = col_tiles < 4 * threads && row_blocks >= threads;
  if (split_rows) {
    const int64_t macs_per_item = p.row_block * p.n * std::max<int64_t>(p.k, 1);
    const int64_t grain = std::max<int64_t>(1, kMinChunkMacs / macs_per_item);
    pool.ParallelFor(row_blocks, grain, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        RunBlock(p, b * p.row_block, std::min(p.m, (b + 1) * p.row_block), 0, col_tiles);
      }
    });
  } else {
    const int64_t macs_per_item = p.m * kt.max_b * std::max<int64_t>(p.k, 1);
    const int64_t grain = std::max<int64_t>(1, kMinChunkMacs / macs_per_item);
    pool.ParallelFor(col_tiles, grain, [&](int64_t t0, int64_t t1) {
      for (int64_t i0 = 0; i0 < p.m; i0 += p.row_block) {
        RunBlock(p, i0, std::min(p.m, i0 + p.row_block), t0, t1);
      }
    });
  }
  return absl::OkStatus();
}

}  // namespace matmul_internal

absl::Status MatMulCpu(const MatMulArgs& args, ThreadPool& pool) {
  return matmul_internal::MatMulCpuIsa(args, pool, matmul_internal::DefaultIsa());
}

}  // namespace xpd::kernels
