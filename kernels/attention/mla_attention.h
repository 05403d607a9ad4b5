// Causal MLA attention for a batch of sequences, in the two forms of the
// DeepSeek-V3 reference (spec §3.6):
//  * latent ("absorbed", MQA-style): queries [q_abs | q_pe] (kv_rank + rope_dim
//    per head) against the paged latent cache; the output stays in latent
//    space (kv_rank per head) and is up-projected by W_UV afterwards.
//  * MHA ("naive"): per-head k_nope/v already up-projected from the latent,
//    plus the shared rotated k_pe; output is v_head_dim per head.
// Query i of a sequence sits at position start + i and sees keys 0..start+i.
#pragma once

#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "kernels/attention/paged_latent_cache.h"
#include "kernels/core/thread_pool.h"

namespace xpd::kernels {

struct AttentionSequence {
  int64_t query_row = 0;  // first row of this sequence's queries in q/out
  int32_t num_queries = 0;
  int64_t start = 0;                     // position of its first query
  const int32_t* block_table = nullptr;  // latent form only
  // MHA form only: rows [0, start + num_queries) of keys for this sequence.
  const float* kv = nullptr;    // [T, heads, nope_dim + v_dim]: k_nope then v per head
  const float* k_pe = nullptr;  // [T, rope_dim] with row stride k_pe_stride
  int64_t k_pe_stride = 0;
};

struct LatentAttentionArgs {
  const float* q = nullptr;  // [rows, heads, kv_rank + rope_dim]
  float* out = nullptr;      // [rows, heads, kv_rank]
  PagedLatentCache cache;
  int32_t layer = 0;
  int32_t heads = 0;
  int32_t kv_rank = 0;
  int32_t rope_dim = 0;
  float softmax_scale = 1.0f;
  std::span<const AttentionSequence> sequences;
};

struct MhaAttentionArgs {
  const float* q = nullptr;  // [rows, heads, nope_dim + rope_dim]
  float* out = nullptr;      // [rows, heads, v_dim]
  int32_t heads = 0;
  int32_t nope_dim = 0;
  int32_t rope_dim = 0;
  int32_t v_dim = 0;
  float softmax_scale = 1.0f;
  std::span<const AttentionSequence> sequences;
};

// `pool` may be null (single-threaded). Work splits over (sequence, head).
absl::Status LatentAttention(const LatentAttentionArgs& args, ThreadPool* pool);
absl::Status MhaAttention(const MhaAttentionArgs& args, ThreadPool* pool);

}  // namespace xpd::kernels
