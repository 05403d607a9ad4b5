// AVX-512 latent-attention loops (see latent_kernels.h). Compiled with
// AVX-512 enabled and entered only after a CPU check; everything but the
// entry point has internal linkage, so no AVX-512 copy of a shared inline
// function can stand in for the AVX2 one.
//
// Heads run in lanes for the scores (16 heads x one key per FMA, no
// horizontal sums) and key dims in lanes for the weighted sum (16 dims x one
// head per FMA): twice the AVX2 loops' work per instruction.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>

#include "kernels/attention/latent_kernels.h"

namespace xpd::kernels::internal {
namespace {

constexpr int kLanes = 16;
constexpr int kKeysPerPass = 8;  // independent FMA chains in flight

// Lane h of q_t[d] is q[h][d]; lanes past `heads` are zero.
void TransposeQueries(const float* const q[], int heads, int64_t width, float* q_t) {
  for (int64_t d = 0; d < width; ++d) {
    for (int h = 0; h < kLanes; ++h) q_t[d * kLanes + h] = h < heads ? q[h][d] : 0.0f;
  }
}

// Fetches the rows of the next pass, one cache line per dim step, while this
// pass computes: a pass reads its K rows side by side, which the hardware
// prefetcher follows poorly, and decode's rows come from DRAM.
class NextRowsPrefetch {
 public:
  NextRowsPrefetch(const float* const rows[], int64_t count, int64_t width)
      : rows_(rows), count_(count), width_(width) {}
  void Step() {
    if (row_ >= count_) return;
    _mm_prefetch(reinterpret_cast<const char*>(rows_[row_] + offset_), _MM_HINT_T0);
    offset_ += kLanes;
    if (offset_ >= width_) offset_ = 0, ++row_;
  }

 private:
  const float* const* rows_;
  int64_t count_, width_;
  int64_t row_ = 0, offset_ = 0;
};

template <int K>
void ScoreKeys(const float* q_t, const float* const rows[], int64_t width, NextRowsPrefetch& next,
               __m512 (&acc)[K]) {
#pragma GCC unroll 8
  for (int j = 0; j < K; ++j) acc[j] = _mm512_setzero_ps();
  for (int64_t d = 0; d < width; ++d) {
    next.Step();
    const __m512 qv = _mm512_loadu_ps(q_t + d * kLanes);
#pragma GCC unroll 8
    for (int j = 0; j < K; ++j) acc[j] = _mm512_fmadd_ps(_mm512_set1_ps(rows[j][d]), qv, acc[j]);
  }
}

void Score(const float* const q[], int heads, const float* const rows[], int64_t keys,
           int64_t width, float scale, float* const scores[], float* scratch) {
  float* q_t = scratch;
  TransposeQueries(q, heads, width, q_t);
  const __m512 vscale = _mm512_set1_ps(scale);
  alignas(64) float lanes[kLanes];
  auto store = [&](__m512 acc, int64_t t) {
    _mm512_store_ps(lanes, _mm512_mul_ps(acc, vscale));
    for (int h = 0; h < heads; ++h) scores[h][t] = lanes[h];
  };
  int64_t t = 0;
  for (; t + kKeysPerPass <= keys; t += kKeysPerPass) {
    const int64_t next = t + kKeysPerPass;
    NextRowsPrefetch prefetch(rows + next, std::min<int64_t>(kKeysPerPass, keys - next), width);
    __m512 acc[kKeysPerPass];
    ScoreKeys<kKeysPerPass>(q_t, rows + t, width, prefetch, acc);
    for (int j = 0; j < kKeysPerPass; ++j) store(acc[j], t + j);
  }
  for (; t < keys; ++t) {
    NextRowsPrefetch none(rows, 0, width);
    __m512 acc[1];
    ScoreKeys<1>(q_t, rows + t, width, none, acc);
    store(acc[0], t);
  }
}

template <int H>
void WeightedSumHeads(const float* const p[], const float* const rows[], int64_t keys,
                      float* const out[], int64_t n) {
  for (int64_t i = 0; i < n; i += kLanes) {
    const __mmask16 mask =
        n - i >= kLanes ? __mmask16{0xffff} : static_cast<__mmask16>((1u << (n - i)) - 1);
    __m512 acc[H];
#pragma GCC unroll 16
    for (int h = 0; h < H; ++h) acc[h] = _mm512_setzero_ps();
    for (int64_t t = 0; t < keys; ++t) {
      const __m512 rv = _mm512_maskz_loadu_ps(mask, rows[t] + i);
#pragma GCC unroll 16
      for (int h = 0; h < H; ++h) acc[h] = _mm512_fmadd_ps(_mm512_set1_ps(p[h][t]), rv, acc[h]);
    }
#pragma GCC unroll 16
    for (int h = 0; h < H; ++h) _mm512_mask_storeu_ps(out[h] + i, mask, acc[h]);
  }
}

using WeightedSumFn = void (*)(const float* const[], const float* const[], int64_t, float* const[],
                               int64_t);

template <int... I>
constexpr auto MakeWeightedSums(std::integer_sequence<int, I...>) {
  return std::array<WeightedSumFn, sizeof...(I)>{&WeightedSumHeads<I + 1>...};
}
constexpr auto kWeightedSums =
    MakeWeightedSums(std::make_integer_sequence<int, kMaxLatentGroupHeads>{});

void WeightedSum(const float* const p[], int heads, const float* const rows[], int64_t keys,
                 float* const out[], int64_t n) {
  kWeightedSums[heads - 1](p, rows, keys, out, n);
}

constexpr LatentKernels kKernels = {.score = &Score, .weighted_sum = &WeightedSum};

}  // namespace

const LatentKernels& Avx512LatentKernels() { return kKernels; }

}  // namespace xpd::kernels::internal
