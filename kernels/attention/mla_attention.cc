#include "kernels/attention/mla_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/attention/latent_kernels.h"
#include "kernels/attention/vector_math.h"
#include "kernels/core/cpu_features.h"

namespace xpd::kernels {
namespace {

using internal::Axpy;
using internal::AxpySum;
using internal::Dot;
using internal::Dot4;
using internal::SoftmaxInPlace;

// AVX2 latent loops: four heads per pass over a key row for the scores,
// eight per pass for the weighted sum.
void Avx2Score(const float* const q[], int heads, const float* const rows[], int64_t keys,
               int64_t width, float scale, float* const scores[], float* /*scratch*/) {
  for (int64_t t = 0; t < keys; ++t) {
    int h = 0;
    for (; h + 4 <= heads; h += 4) {
      float dots[4];
      Dot4(q + h, rows[t], width, dots);
      for (int j = 0; j < 4; ++j) scores[h + j][t] = scale * dots[j];
    }
    for (; h < heads; ++h) scores[h][t] = scale * Dot(q[h], rows[t], width);
  }
}

void Avx2WeightedSum(const float* const p[], int heads, const float* const rows[], int64_t keys,
                     float* const out[], int64_t n) {
  int h = 0;
  for (; h + 8 <= heads; h += 8) AxpySum<8>(p + h, rows, keys, out + h, n);
  for (; h < heads; ++h) AxpySum<1>(p + h, rows, keys, out + h, n);
}

constexpr internal::LatentKernels kAvx2LatentKernels = {.score = &Avx2Score,
                                                        .weighted_sum = &Avx2WeightedSum};

// The widest set the CPU has (XPD_CPU_ISA=avx2 caps it), fixed per process.
const internal::LatentKernels& PickLatentKernels() {
  static const internal::LatentKernels& kernels = GetCpuFeatures().HasAvx512()
                                                      ? internal::Avx512LatentKernels()
                                                      : internal::Avx2LatentKernels();
  return kernels;
}

// One (sequence, head) pair: the unit of parallel work.
struct HeadTask {
  int32_t sequence;
  int32_t head;
};

std::vector<HeadTask> MakeTasks(std::span<const AttentionSequence> sequences, int32_t heads) {
  std::vector<HeadTask> tasks;
  tasks.reserve(sequences.size() * heads);
  for (size_t s = 0; s < sequences.size(); ++s) {
    for (int32_t h = 0; h < heads; ++h) tasks.push_back({static_cast<int32_t>(s), h});
  }
  return tasks;
}

void RunTasks(size_t count, ThreadPool* pool, const std::function<void(int64_t)>& fn) {
  if (pool == nullptr || pool->num_threads() == 1 || count == 1) {
    for (size_t i = 0; i < count; ++i) fn(static_cast<int64_t>(i));
    return;
  }
  // Claimed one by one: sequences of different lengths cost differently.
  pool->ParallelForDynamic(static_cast<int64_t>(count), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) fn(i);
  });
}

absl::Status CheckSequences(std::span<const AttentionSequence> sequences, bool latent) {
  for (const AttentionSequence& s : sequences) {
    if (s.num_queries < 0 || s.start < 0 || s.query_row < 0) {
      return absl::InvalidArgumentError("attention: negative query count, start or row");
    }
    if (latent ? s.block_table == nullptr : (s.kv == nullptr || s.k_pe == nullptr)) {
      return absl::InvalidArgumentError("attention: sequence without keys");
    }
  }
  return absl::OkStatus();
}

}  // namespace

const internal::LatentKernels& internal::Avx2LatentKernels() { return kAvx2LatentKernels; }

absl::Status LatentAttention(const LatentAttentionArgs& a, ThreadPool* pool) {
  if (a.q == nullptr || a.out == nullptr || a.cache.pool == nullptr || a.heads <= 0 ||
      a.kv_rank + a.rope_dim != a.cache.latent_dim) {
    return absl::InvalidArgumentError("LatentAttention: bad buffers or dims");
  }
  if (absl::Status s = CheckSequences(a.sequences, /*latent=*/true); !s.ok()) return s;
  const int64_t q_width = a.kv_rank + a.rope_dim;
  // Every head attends over the same latent rows: a task takes a group of
  // heads and reads each row once for all of them (while it is in L1),
  // instead of once per head. Sequences are split into just enough head
  // groups to give every thread work. Each head's operations and their order
  // are the same whatever the grouping.
  const int64_t threads = pool == nullptr ? 1 : pool->num_threads();
  const int64_t sequences = static_cast<int64_t>(a.sequences.size());
  const int64_t groups = std::clamp<int64_t>((threads + sequences - 1) / sequences, 1, a.heads);
  const int32_t group_heads = static_cast<int32_t>((a.heads + groups - 1) / groups);
  const internal::LatentKernels& kernels = PickLatentKernels();
  RunTasks(a.sequences.size() * groups, pool, [&](int64_t task_index) {
    const AttentionSequence& seq = a.sequences[task_index / groups];
    const int32_t h0 = static_cast<int32_t>(task_index % groups) * group_heads;
    const int32_t h1 = std::min(a.heads, h0 + group_heads);
    if (h0 >= h1) return;
    const int64_t keys = seq.start + seq.num_queries;
    thread_local std::vector<float> scores;  // [head of the group][key]
    thread_local std::vector<const float*> rows;
    thread_local std::vector<float> scratch;
    scores.resize((h1 - h0) * keys);
    rows.resize(keys);
    scratch.resize(q_width * internal::kMaxLatentGroupHeads);
    for (int64_t t = 0; t < keys; ++t) rows[t] = a.cache.Row(seq.block_table, a.layer, t);
    for (int32_t i = 0; i < seq.num_queries; ++i) {
      const int64_t row = seq.query_row + i;
      const int64_t visible = seq.start + i + 1;
      // [q_abs | q_pe] . [c_kv | k_pe] in one dot (the absorbed nope and rope
      // terms), then softmax, then the weighted sum of the same rows; up to
      // 16 heads per pass over the rows.
      for (int32_t first = h0; first < h1; first += internal::kMaxLatentGroupHeads) {
        const int n = std::min(h1 - first, internal::kMaxLatentGroupHeads);
        const float* q[internal::kMaxLatentGroupHeads];
        float* head_scores[internal::kMaxLatentGroupHeads];
        float* out[internal::kMaxLatentGroupHeads];
        for (int j = 0; j < n; ++j) {
          q[j] = a.q + (row * a.heads + first + j) * q_width;
          head_scores[j] = scores.data() + (first + j - h0) * keys;
          out[j] = a.out + (row * a.heads + first + j) * a.kv_rank;
        }
        kernels.score(q, n, rows.data(), visible, q_width, a.softmax_scale, head_scores,
                      scratch.data());
        for (int j = 0; j < n; ++j) SoftmaxInPlace(head_scores[j], visible);
        kernels.weighted_sum(head_scores, n, rows.data(), visible, out, a.kv_rank);
      }
    }
  });
  return absl::OkStatus();
}

absl::Status MhaAttention(const MhaAttentionArgs& a, ThreadPool* pool) {
  if (a.q == nullptr || a.out == nullptr || a.heads <= 0) {
    return absl::InvalidArgumentError("MhaAttention: bad buffers or dims");
  }
  if (absl::Status s = CheckSequences(a.sequences, /*latent=*/false); !s.ok()) return s;
  const int64_t q_width = a.nope_dim + a.rope_dim;
  const int64_t kv_width = a.nope_dim + a.v_dim;
  const std::vector<HeadTask> tasks = MakeTasks(a.sequences, a.heads);
  RunTasks(tasks.size(), pool, [&](int64_t task_index) {
    const HeadTask task = tasks[task_index];
    const AttentionSequence& seq = a.sequences[task.sequence];
    thread_local std::vector<float> scores;
    scores.resize(seq.start + seq.num_queries);
    for (int32_t i = 0; i < seq.num_queries; ++i) {
      const int64_t row = seq.query_row + i;
      const float* q = a.q + (row * a.heads + task.head) * q_width;
      const int64_t visible = seq.start + i + 1;
      for (int64_t t = 0; t < visible; ++t) {
        const float* k = seq.kv + (t * a.heads + task.head) * kv_width;
        const float nope = Dot(q, k, a.nope_dim);
        const float rope = Dot(q + a.nope_dim, seq.k_pe + t * seq.k_pe_stride, a.rope_dim);
        scores[t] = a.softmax_scale * (nope + rope);
      }
      SoftmaxInPlace(scores.data(), visible);
      float* out = a.out + (row * a.heads + task.head) * a.v_dim;
      std::memset(out, 0, sizeof(float) * a.v_dim);
      for (int64_t t = 0; t < visible; ++t) {
        Axpy(scores[t], seq.kv + (t * a.heads + task.head) * kv_width + a.nope_dim, out, a.v_dim);
      }
    }
  });
  return absl::OkStatus();
}

}  // namespace xpd::kernels
