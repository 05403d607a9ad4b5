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
using internal::AxpySum;
using internal::Dot;
using internal::Dot4;
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
  RunTasks(a.sequences.size() * groups, pool, [&](int64_t task_index) {
    const AttentionSequence& seq = a.sequences[task_index / groups];
    const int32_t h0 = static_cast<int32_t>(task_index % groups) * group_heads;
    const int32_t h1 = std::min(a.heads, h0 + group_heads);
    if (h0 >= h1) return;
    const int64_t keys = seq.start + seq.num_queries;
    thread_local std::vector<float> scores;  // [head of the group][key]
    thread_local std::vector<const float*> rows;
    scores.resize((h1 - h0) * keys);
    rows.resize(keys);
    for (int64_t t = 0; t < keys; ++t) rows[t] = a.cache.Row(seq.block_table, a.layer, t);
    for (int32_t i = 0; i < seq.num_queries; ++i) {
      const int64_t row = seq.query_row + i;
      const int64_t visible = seq.start + i + 1;
      auto q = [&](int32_t h) { return a.q + (row * a.heads + h) * q_width; };
      auto out = [&](int32_t h) { return a.out + (row * a.heads + h) * a.kv_rank; };
      auto head_scores = [&](int32_t h) { return scores.data() + (h - h0) * keys; };
      // [q_abs | q_pe] . [c_kv | k_pe] in one dot: the absorbed nope and rope
      // terms; four heads per pass over a row.
      for (int64_t t = 0; t < visible; ++t) {
        int32_t h = h0;
        for (; h + 4 <= h1; h += 4) {
          const float* qs[4] = {q(h), q(h + 1), q(h + 2), q(h + 3)};
          float dots[4];
          Dot4(qs, rows[t], q_width, dots);
          for (int j = 0; j < 4; ++j) head_scores(h + j)[t] = a.softmax_scale * dots[j];
        }
        for (; h < h1; ++h) head_scores(h)[t] = a.softmax_scale * Dot(q(h), rows[t], q_width);
      }
      const float* weights[8];
      float* outs[8];
      int32_t h = h0;
      for (; h + 8 <= h1; h += 8) {
        for (int j = 0; j < 8; ++j) {
          SoftmaxInPlace(head_scores(h + j), visible);
          weights[j] = head_scores(h + j);
          outs[j] = out(h + j);
        }
        AxpySum<8>(weights, rows.data(), visible, outs, a.kv_rank);
      }
      for (; h < h1; ++h) {
        SoftmaxInPlace(head_scores(h), visible);
        weights[0] = head_scores(h);
        outs[0] = out(h);
        AxpySum<1>(weights, rows.data(), visible, outs, a.kv_rank);
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
