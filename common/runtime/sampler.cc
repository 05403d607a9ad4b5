// Sampler: greedy / temperature / top-k / top-p over one f32 logits row.
//
// Per call, with V the vocabulary size:
//   1. max of the raw logits, then exp(x - max) and its sum: the log-softmax
//      normalizer of the raw logits, needed for the reported logprob in every
//      mode (and, at temperature 1, the sampling weights);
//   2. greedy (temperature 0) returns the first index holding the max;
//   3. otherwise the candidates are the whole vocabulary or the top_k best (a
//      heap for k <= 2048, else one nth_element), weighted by
//      exp((x - max) / T), cut to the top_p nucleus (a radix select on the
//      weights that sorts only the tokens sharing the cut's bucket), and one
//      uniform draw picks a token by inverse CDF.
// Nothing sorts the vocabulary: each step is O(V) plus O(k log k) for top_k.
//
// Reproducibility: the generator (SplitMix64) and every step that decides the
// token, exp included, are our own code, and library sorts only see strict
// total orders (unique results), so a seed gives the same tokens on every
// standard library version (std::log only feeds reported logprobs).
//
// Degenerate inputs: NaN counts as -inf and +inf as the largest finite float
// (several +inf tokens share the mass equally). If every logit is -inf or NaN
// there is no distribution: token 0 is returned with logprob -inf.

#include "common/runtime/sampler.h"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/core/vector_exp.h"

namespace xpd::runtime {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kMaxFloat = std::numeric_limits<float>::max();

// Maps a logit onto a totally ordered value: NaN -> -inf, +inf -> max float
// (keeps x - max finite, so +inf tokens get weight 1 instead of NaN).
inline float Clean(float x) {
  if (std::isnan(x)) return kNegInf;
  return std::min(x, kMaxFloat);
}

// The O(V) loops use AVX2 intrinsics (the project's baseline ISA): compilers
// vectorize such loops only for some spellings under default FP flags, and at
// 129k tokens per call they are the whole cost.

// Clean() on 8 lanes.
inline __m256 CleanV(__m256 x) {
  const __m256 ordered = _mm256_cmp_ps(x, x, _CMP_ORD_Q);
  return _mm256_min_ps(_mm256_blendv_ps(_mm256_set1_ps(kNegInf), x, ordered),
                       _mm256_set1_ps(kMaxFloat));
}

// Runs body(offset, 8 lanes) over data[begin, n) in blocks of 8; the ragged
// end is padded with `pad`, so every element goes through the same vector code.
template <typename Body>
void ForEachBlock(const float* data, size_t begin, size_t n, float pad, Body body) {
  size_t i = begin;
  for (; i + 8 <= n; i += 8) body(i, _mm256_loadu_ps(data + i));
  if (i < n) {
    alignas(32) float tail[8];
    std::fill(tail, tail + 8, pad);
    std::copy(data + i, data + n, tail);
    body(i, _mm256_load_ps(tail));
  }
}

// Calls fn(i) for each set lane i of an 8-bit mask, lowest first.
template <typename Fn>
void ForEachSetLane(int mask, Fn fn) {
  for (unsigned m = static_cast<unsigned>(mask); m != 0; m &= m - 1) fn(std::countr_zero(m));
}

// Largest cleaned logit (-inf if none).
float MaxLogit(std::span<const float> logits) {
  __m256 lanes = _mm256_set1_ps(kNegInf);
  ForEachBlock(logits.data(), 0, logits.size(), kNegInf,
               [&](size_t, __m256 x) { lanes = _mm256_max_ps(lanes, CleanV(x)); });
  alignas(32) float out[8];
  _mm256_store_ps(out, lanes);
  return *std::max_element(out, out + 8);
}

// Lowest index whose cleaned logit equals `max` (which must occur).
int32_t FirstIndexOf(std::span<const float> logits, float max) {
  int32_t found = -1;
  ForEachBlock(logits.data(), 0, logits.size(), kNegInf, [&](size_t i, __m256 x) {
    if (found >= 0) return;
    const int mask = _mm256_movemask_ps(_mm256_cmp_ps(CleanV(x), _mm256_set1_ps(max), _CMP_EQ_OQ));
    if (mask != 0) found = static_cast<int32_t>(i) + std::countr_zero(static_cast<unsigned>(mask));
  });
  return found;
}

// weights[i] = exp((Clean(logits[i]) - max) * inv_t) for i < n; returns their
// sum. Multiplying by inv_t = 1 is exact, so temperature 1 needs no own path.
// inv_t is a float, clamped by the caller: 0 * huge stays 0 and anything
// below the max goes to -inf (weight 0), as the T -> 0 limit should.
double ExpWeights(const float* logits, size_t n, float max, float inv_t, float* weights) {
  const __m256 max_v = _mm256_set1_ps(max);
  const __m256 inv_t_v = _mm256_set1_ps(inv_t);
  __m256d sum_lo = _mm256_setzero_pd(), sum_hi = _mm256_setzero_pd();
  ForEachBlock(logits, 0, n, kNegInf, [&](size_t i, __m256 x) {
    const __m256 w = kernels::Exp8(_mm256_mul_ps(_mm256_sub_ps(CleanV(x), max_v), inv_t_v));
    if (i + 8 <= n) {
      _mm256_storeu_ps(weights + i, w);
    } else {
      alignas(32) float tail[8];
      _mm256_store_ps(tail, w);
      std::copy(tail, tail + (n - i), weights + i);
    }
    // Padding lanes have weight 0, so they add nothing.
    sum_lo = _mm256_add_pd(sum_lo, _mm256_cvtps_pd(_mm256_castps256_ps128(w)));
    sum_hi = _mm256_add_pd(sum_hi, _mm256_cvtps_pd(_mm256_extractf128_ps(w, 1)));
  });
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, _mm256_add_pd(sum_lo, sum_hi));
  return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
}

float InverseTemperature(float temperature) {
  return static_cast<float>(std::min<double>(1.0 / temperature, kMaxFloat));
}

// "a is more likely than b": larger value first, ties to the lower id. A
// strict total order, so every sort below has a unique result.
struct MoreLikely {
  const float* value;
  bool operator()(int32_t a, int32_t b) const {
    return value[a] > value[b] || (value[a] == value[b] && a < b);
  }
};

// The k most likely ids by raw logit (k <= V), written to ids[0, k) most
// likely first. A heap of k (value, id) entries whose top is the least likely
// one; ids come in increasing order, so a newcomer must be strictly larger
// than the top to enter, and blocks of 8 with no such value are skipped in one
// compare. O(V) for small k.
void TopKByLogit(std::span<const float> logits, int32_t k, int32_t* ids) {
  struct Entry {
    float value;
    int32_t id;
  };
  auto more_likely = [](const Entry& a, const Entry& b) {
    return a.value > b.value || (a.value == b.value && a.id < b.id);
  };
  std::vector<Entry> heap(k);
  for (int32_t j = 0; j < k; ++j) heap[j] = {Clean(logits[j]), j};
  std::make_heap(heap.begin(), heap.end(), more_likely);
  float threshold = heap.front().value;
  ForEachBlock(logits.data(), k, logits.size(), kNegInf, [&](size_t i, __m256 x) {
    const __m256 clean = CleanV(x);
    const int mask =
        _mm256_movemask_ps(_mm256_cmp_ps(clean, _mm256_set1_ps(threshold), _CMP_GT_OQ));
    ForEachSetLane(mask, [&](int lane) {
      const float value = Clean(logits[i + lane]);
      if (!(value > threshold)) return;  // the threshold rose meanwhile
      std::pop_heap(heap.begin(), heap.end(), more_likely);
      heap.back() = {value, static_cast<int32_t>(i) + lane};
      std::push_heap(heap.begin(), heap.end(), more_likely);
      threshold = heap.front().value;
    });
  });
  std::sort(heap.begin(), heap.end(), more_likely);
  for (int32_t j = 0; j < k; ++j) ids[j] = heap[j].id;
}

// Top-p nucleus over the whole vocabulary: the smallest set of most likely
// tokens whose weight reaches top_p * total, found by radix select instead of
// a sort:
//  1. Tokens below tau = (1 - top_p) * total / (2 V) weigh less than half the
//     mass top_p leaves out, so the tokens at or above tau already reach the
//     target and the nucleus is among them. One vectorized pass collects
//     them; for real distributions they are a small fraction of V.
//  2. Non-negative floats order like their bit patterns. Bucket the survivors
//     on the exponent, then on successive mantissa bit fields; at each level
//     the buckets above the one where the mass counted from the top crosses
//     the target are wholly in, and only that bucket is kept for the next.
//  3. One more vectorized pass over V collects the tokens above the final
//     bucket (in id order); the bucket itself is sorted, most likely first,
//     and its prefix that reaches the target is appended.
// Writes the nucleus to ids[0, size), in a fully specified order, and returns
// size; ids must hold V entries (the rest is scratch).
int32_t Nucleus(std::span<const float> weights, double total, float top_p, int32_t* ids) {
  const int32_t vocab = static_cast<int32_t>(weights.size());
  const double target = static_cast<double>(top_p) * total;
  auto bits = [&](int32_t id) { return std::bit_cast<uint32_t>(weights[id]); };

  // Step 1: the survivors, packed at the back: ids[begin, vocab).
  const float tau = static_cast<float>((1.0 - top_p) * total / (2.0 * vocab));
  int32_t begin = vocab;
  ForEachBlock(weights.data(), 0, vocab, 0.0f, [&](size_t i, __m256 w) {
    const __m256 keep = _mm256_and_ps(_mm256_cmp_ps(w, _mm256_set1_ps(tau), _CMP_GE_OQ),
                                      _mm256_cmp_ps(w, _mm256_setzero_ps(), _CMP_GT_OQ));
    ForEachSetLane(_mm256_movemask_ps(keep),
                   [&](int lane) { ids[--begin] = static_cast<int32_t>(i) + lane; });
  });

  // Step 2. After each level every id in [begin, vocab) has bits >> shift ==
  // prefix. Weights are in [0, 1], so the exponent field holds 0..127.
  constexpr struct {
    int shift;
    int width;
  } kFields[] = {{23, 8}, {15, 8}, {7, 8}, {0, 7}};
  double above = 0.0;  // mass of the tokens known to be in
  int shift = 32;      // no level run yet: every survivor is in the bucket
  uint32_t prefix = 0;
  for (const auto& field : kFields) {
    if (vocab - begin <= 64) break;
    const uint32_t mask = (1u << field.width) - 1;
    std::array<double, 256> mass{};
    for (int32_t j = begin; j < vocab; ++j) {
      mass[(bits(ids[j]) >> field.shift) & mask] += weights[ids[j]];
    }
    uint32_t boundary = 0;  // if rounding keeps the target out of reach: all in
    for (int b = static_cast<int>(mask); b >= 0; --b) {
      if (above + mass[b] >= target) {
        boundary = b;
        break;
      }
      above += mass[b];
    }
    // Keep the boundary bucket, packed at the back. Back to front, so every
    // write lands on a slot already read.
    int32_t new_begin = vocab;
    for (int32_t j = vocab - 1; j >= begin; --j) {
      if (((bits(ids[j]) >> field.shift) & mask) == boundary) ids[--new_begin] = ids[j];
    }
    begin = new_begin;
    shift = field.shift;
    prefix = (prefix << field.width) | boundary;
  }

  // Step 3. Ids above the bucket and ids in it are disjoint, so the front
  // never reaches `begin`.
  int32_t size = 0;
  if (shift < 32) {
    // bits >> shift > prefix  <=>  weight >= the float whose bits are (prefix + 1) << shift.
    const __m256 lowest_above = _mm256_set1_ps(std::bit_cast<float>((prefix + 1) << shift));
    ForEachBlock(weights.data(), 0, vocab, 0.0f, [&](size_t i, __m256 w) {
      ForEachSetLane(_mm256_movemask_ps(_mm256_cmp_ps(w, lowest_above, _CMP_GE_OQ)),
                     [&](int lane) { ids[size++] = static_cast<int32_t>(i) + lane; });
    });
  }
  std::sort(ids + begin, ids + vocab, MoreLikely{weights.data()});
  for (int32_t j = begin; j < vocab && above < target; ++j) {
    above += weights[ids[j]];
    ids[size++] = ids[j];
  }
  return std::max(size, 1);  // the top token has weight 1, so never empty in practice
}

// Order-preserving integer key of a cleaned logit (-0 folded into +0 so that
// it ties with +0, as the float comparison does).
inline int32_t OrderedKey(float clean) {
  const int32_t b = std::bit_cast<int32_t>(clean + 0.0f);
  return b >= 0 ? b : b ^ 0x7FFFFFFF;
}

// Above this top_k the heap in TopKByLogit loses to one nth_element.
constexpr int32_t kMaxHeapTopK = 2048;

// Large top_k: zeroes the weights of all but the k most likely tokens (ties to
// the lower id) and returns the mass left. One nth_element over integer keys
// (in `scratch`), then one pass; the survivors stay in id order, and a top_p
// cut after this needs no sorted candidate list.
double KeepTopK(std::span<const float> logits, int32_t k, float* weights,
                std::vector<int32_t>& scratch) {
  const int32_t vocab = static_cast<int32_t>(logits.size());
  scratch.resize(vocab);
  for (int32_t i = 0; i < vocab; ++i) scratch[i] = OrderedKey(Clean(logits[i]));
  std::nth_element(scratch.begin(), scratch.begin() + (k - 1), scratch.end(),
                   std::greater<int32_t>());
  const int32_t kth = scratch[k - 1];
  // Everything before kth is >= kth; only those strictly above are sure to be in.
  int32_t ties_left =
      k - static_cast<int32_t>(std::count_if(scratch.begin(), scratch.begin() + (k - 1),
                                             [kth](int32_t key) { return key > kth; }));
  double mass = 0.0;
  for (int32_t i = 0; i < vocab; ++i) {
    const int32_t key = OrderedKey(Clean(logits[i]));
    bool keep = key > kth;
    if (key == kth && ties_left > 0) {
      keep = true;
      --ties_left;
    }
    if (keep) {
      mass += weights[i];
    } else {
      weights[i] = 0.0f;
    }
  }
  return mass;
}

// What one draw chooses from: order[0, count), or ids 0..count-1 when
// all_ids; `mass` is their total weight, summed in the order of the scan.
struct Candidates {
  bool all_ids = true;
  int32_t count = 0;
  double mass = 0.0;
};

// Inverse CDF: the first candidate, in candidate order, at which the running
// weight exceeds u * mass. Zero-weight tokens are never chosen.
int32_t Draw(double u, const Candidates& c, const float* weights, const int32_t* order) {
  auto id_at = [&](int32_t j) { return c.all_ids ? j : order[j]; };
  const double threshold = u * c.mass;
  double cumulative = 0.0;
  int32_t last_positive = id_at(0);
  for (int32_t j = 0; j < c.count; ++j) {
    const int32_t id = id_at(j);
    const float w = weights[id];
    if (w <= 0.0f) continue;
    last_positive = id;
    cumulative += w;
    if (cumulative > threshold) return id;
  }
  // Only reachable if rounding leaves the running sum short of the threshold.
  return last_positive;
}

// Candidates for one draw: temperature, then top_k, then top_p. On entry
// `weights` holds exp(x - max) for every id (the temperature-1 weights); on
// exit it holds the draw's weights for every candidate.
Candidates SelectCandidates(std::span<const float> logits, float max_logit, double raw_sum,
                            const SamplingParams& params, std::vector<float>& weights,
                            std::vector<int32_t>& order) {
  const int32_t vocab = static_cast<int32_t>(logits.size());
  const float inv_t = InverseTemperature(params.temperature);
  const bool unit_temperature = params.temperature == 1.0f;
  const bool use_top_k = params.top_k > 0 && params.top_k < vocab;
  const bool use_top_p = params.top_p < 1.0f;
  Candidates c{.all_ids = true, .count = vocab, .mass = raw_sum};

  if (use_top_k && params.top_k <= kMaxHeapTopK) {
    // Small k: work on the k candidates only, most likely first.
    c.all_ids = false;
    c.count = params.top_k;
    order.resize(c.count);
    TopKByLogit(logits, c.count, order.data());
    if (!unit_temperature) {  // same arithmetic as the full pass, on gathered logits
      std::vector<float> gathered(c.count), tempered(c.count);
      for (int32_t j = 0; j < c.count; ++j) gathered[j] = logits[order[j]];
      ExpWeights(gathered.data(), c.count, max_logit, inv_t, tempered.data());
      for (int32_t j = 0; j < c.count; ++j) weights[order[j]] = tempered[j];
    }
    double top_k_mass = 0.0;
    for (int32_t id : order) top_k_mass += weights[id];
    const double target = static_cast<double>(params.top_p) * top_k_mass;
    if (use_top_p) {
      int32_t nucleus = 0;
      c.mass = 0.0;
      while (nucleus < c.count && c.mass < target) c.mass += weights[order[nucleus++]];
      c.count = std::max(nucleus, 1);
    } else {
      c.mass = top_k_mass;
    }
    return c;
  }

  // Whole vocabulary, masked to the top k when k is large.
  if (!unit_temperature)
    c.mass = ExpWeights(logits.data(), vocab, max_logit, inv_t, weights.data());
  if (use_top_k) c.mass = KeepTopK(logits, params.top_k, weights.data(), order);
  if (use_top_p) {
    c.all_ids = false;
    order.resize(vocab);
    c.count = Nucleus(weights, c.mass, params.top_p, order.data());
    c.mass = 0.0;
    for (int32_t j = 0; j < c.count; ++j) c.mass += weights[order[j]];
  }
  return c;
}

}  // namespace

absl::Status ValidateSamplingParams(const SamplingParams& params) {
  // Negated comparisons so that NaN is rejected too.
  if (!(params.temperature >= 0.0f && params.temperature <= 100.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be in [0, 100], got ", params.temperature));
  }
  if (params.top_k < 0) {
    return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", params.top_k));
  }
  if (!(params.top_p > 0.0f && params.top_p <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", params.top_p));
  }
  if (params.num_top_logprobs < 0 || params.num_top_logprobs > 20) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_top_logprobs must be in [0, 20], got ", params.num_top_logprobs));
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_state_(params.seed) {}

// SplitMix64 (Steele, Lea, Flood 2014): 2^64 period, passes BigCrush, and its
// output is fully specified here, unlike std:: distributions.
double Sampler::NextUniform() {
  uint64_t z = (rng_state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-53;  // 53 random bits -> [0, 1)
}

void Sampler::SkipSamples(int64_t samples) {
  // SplitMix64's state advances by a constant per draw.
  if (params_.temperature > 0.0f && samples > 0) {
    rng_state_ += 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(samples);
  }
}

SampledToken Sampler::Sample(std::span<const float> logits) {
  const int32_t vocab = static_cast<int32_t>(logits.size());
  SampledToken result;
  const bool greedy = !(params_.temperature > 0.0f);
  // Every non-greedy call consumes exactly one draw, whatever the logits, so
  // the generator's position depends only on the number of calls.
  const double u = greedy ? 0.0 : NextUniform();
  if (vocab == 0) {
    result.logprob = kNegInf;
    return result;
  }
  const int32_t num_top = std::min(params_.num_top_logprobs, vocab);

  const float max_logit = MaxLogit(logits);
  if (max_logit == kNegInf) {  // all -inf / NaN: no distribution (see top)
    result.logprob = kNegInf;
    for (int32_t i = 0; i < num_top; ++i) result.top_logprobs.push_back({i, kNegInf});
    return result;
  }

  // Log-softmax normalizer of the raw logits. The weights are kept: at
  // temperature 1 they are also the sampling weights.
  probs_.resize(vocab);
  const double raw_sum = ExpWeights(logits.data(), vocab, max_logit, 1.0f, probs_.data());
  const double lse = static_cast<double>(max_logit) + std::log(raw_sum);
  auto raw_logprob = [&](int32_t token) {
    return static_cast<float>(static_cast<double>(Clean(logits[token])) - lse);
  };
  if (num_top > 0) {
    std::vector<int32_t> top(num_top);
    TopKByLogit(logits, num_top, top.data());
    for (int32_t id : top) result.top_logprobs.push_back({id, raw_logprob(id)});
  }

  if (greedy) {
    const int32_t argmax = FirstIndexOf(logits, max_logit);  // lowest id on ties
    result.token = argmax;
    result.logprob = raw_logprob(argmax);
    return result;
  }

  const Candidates candidates =
      SelectCandidates(logits, max_logit, raw_sum, params_, probs_, order_);
  result.token = Draw(u, candidates, probs_.data(), order_.data());
  result.logprob = raw_logprob(result.token);
  return result;
}

}  // namespace xpd::runtime
