#include "kernels/attention/mla_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/attention/vector_math.h"

namespace xpd::kernels {
namespace {

using internal::Axpy;
using internal::Dot;
using internal::SoftmaxInPlace;

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
  pool->ParallelFor(static_cast<int64_t>(count), 1, [&](int64_t begin, int64_t end) {
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

absl::Status LatentAttention(const LatentAttentionArgs& a, ThreadPool* pool) {
  if (a.q == nullptr || a.out == nullptr || a.cache.pool == nullptr || a.heads <= 0 ||
      a.kv_rank + a.rope_dim != a.cache.latent_dim) {
    return absl::InvalidArgumentError("LatentAttention: bad buffers or dims");
  }
  if (absl::Status s = CheckSequences(a.sequences, /*latent=*/true); !s.ok()) return s;
  const int64_t q_width = a.kv_rank + a.rope_dim;
  const std::vector<HeadTask> tasks = MakeTasks(a.sequences, a.heads);
  RunTasks(tasks.size(), pool, [&](int64_t task_index) {
    const HeadTask task = tasks[task_index];
    const AttentionSequence& seq = a.sequences[task.sequence];
    const int64_t keys = seq.start + seq.num_queries;
    thread_local std::vector<float> scores;
    thread_local std::vector<const float*> rows;
    scores.resize(keys);
    rows.resize(keys);
    for (int64_t t = 0; t < keys; ++t) rows[t] = a.cache.Row(seq.block_table, a.layer, t);
    for (int32_t i = 0; i < seq.num_queries; ++i) {
      const int64_t row = seq.query_row + i;
      const float* q = a.q + (row * a.heads + task.head) * q_width;
      const int64_t visible = seq.start + i + 1;
      // [q_abs | q_pe] . [c_kv | k_pe] in one dot: the absorbed nope and rope terms.
      for (int64_t t = 0; t < visible; ++t) scores[t] = a.softmax_scale * Dot(q, rows[t], q_width);
      SoftmaxInPlace(scores.data(), visible);
      float* out = a.out + (row * a.heads + task.head) * a.kv_rank;
      std::memset(out, 0, sizeof(float) * a.kv_rank);
      for (int64_t t = 0; t < visible; ++t) Axpy(scores[t], rows[t], out, a.kv_rank);
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
