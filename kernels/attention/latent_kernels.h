// Inner loops of the latent (absorbed) attention form, one set per ISA: the
// scores of a group of heads against every visible key row, and the
// probability-weighted sum of those rows. LatentAttention picks the widest
// set the CPU has, once per process; within a set, each head's results
// depend only on its own inputs (not on which heads share the group).
#pragma once

#include <cstdint>

namespace xpd::kernels::internal {

inline constexpr int kMaxLatentGroupHeads = 16;

struct LatentKernels {
  // scores[h][t] = scale * <q[h], rows[t]> (width values) for h < heads
  // (at most kMaxLatentGroupHeads) and t < keys. `scratch` holds
  // width * kMaxLatentGroupHeads floats.
  void (*score)(const float* const q[], int heads, const float* const rows[], int64_t keys,
                int64_t width, float scale, float* const scores[], float* scratch);
  // out[h][i] = sum over t < keys, in t order, of p[h][t] * rows[t][i], for
  // h < heads (at most kMaxLatentGroupHeads) and i < n.
  void (*weighted_sum)(const float* const p[], int heads, const float* const rows[], int64_t keys,
                       float* const out[], int64_t n);
};

const LatentKernels& Avx2LatentKernels();    // in mla_attention.cc
const LatentKernels& Avx512LatentKernels();  // only callable after a CPU check

}  // namespace xpd::kernels::internal
