// MLA attention (spec §3.4-§3.6). Sequences decoding one token use the
// absorbed latent form; sequences with several new tokens use the MHA form
// with keys and values up-projected from the latent cache.
#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/model/decoder_layer.h"

namespace xpd::model {
namespace {

using kernels::AttentionSequence;

bool UsesLatentForm(const LayerContext& context, const SequenceRows& sequence) {
  switch (context.attention) {
    case AttentionForm::kLatent:
      return true;
    case AttentionForm::kMha:
      return false;
    case AttentionForm::kAuto:
      return sequence.num_rows == 1;
  }
  return false;
}

// o[rows of latent sequences] = W_UV * LatentAttention([W_UK^T q_nope | q_pe]).
absl::Status LatentPart(const LayerContext& c, const AttentionWeights& w, int32_t layer,
                        const float* q, std::span<const AttentionSequence> sequences, float* o) {
  const ModelConfig& cfg = c.config;
  const int64_t heads = cfg.num_attention_heads, rank = cfg.kv_lora_rank;
  const int64_t nope = cfg.qk_nope_head_dim, rope = cfg.qk_rope_head_dim, dq = cfg.qk_head_dim();
  const int64_t width = rank + rope, v = cfg.v_head_dim;
  float* q_latent = c.scratch.Floats(ScratchSlot::kAbsorbedQuery, c.rows * heads * width);
  // Rows of MHA-form sequences are not written by LatentAttention: zero, so
  // that their (later overwritten) W_UV products stay finite.
  float* o_latent = c.scratch.Floats(ScratchSlot::kLatentOut, c.rows * heads * rank);
  std::fill_n(o_latent, c.rows * heads * rank, 0.0f);
  // Per head: q_abs[h] = W_UK[h]^T q_nope[h], all heads in one group.
  std::vector<kernels::WeightMatrix> uk(heads), uv(heads);
  std::vector<kernels::MatMulArgs> problems(heads);
  for (int64_t h = 0; h < heads; ++h) {
    uk[h] = w.uk_t.matrix.RowSlice(h * rank, rank);
    problems[h] = {.x = q + h * dq,
                   .x_stride = heads * dq,
                   .w = &uk[h],
                   .y = q_latent + h * width,
                   .y_stride = heads * width,
                   .m = c.rows,
                   .precision = c.precision};
  }
  XPD_RETURN_IF_ERROR(c.backend.MatMulGroup(problems));
  for (int64_t r = 0; r < c.rows; ++r) {
    for (int64_t h = 0; h < heads; ++h) {
      std::memcpy(&q_latent[(r * heads + h) * width + rank], q + r * heads * dq + h * dq + nope,
                  sizeof(float) * rope);
    }
  }
  XPD_RETURN_IF_ERROR(
      c.backend.LatentAttention({.q = q_latent,
                                 .out = o_latent,
                                 .cache = c.cache,
                                 .layer = layer,
                                 .heads = static_cast<int32_t>(heads),
                                 .kv_rank = static_cast<int32_t>(rank),
                                 .rope_dim = static_cast<int32_t>(rope),
                                 .softmax_scale = static_cast<float>(cfg.SoftmaxScale()),
                                 .sequences = sequences}));
  // Per head: o[h] = W_UV[h] o_latent[h].
  for (int64_t h = 0; h < heads; ++h) {
    uv[h] = w.uv.matrix.RowSlice(h * v, v);
    problems[h] = {.x = o_latent + h * rank,
                   .x_stride = heads * rank,
                   .w = &uv[h],
                   .y = o + h * v,
                   .y_stride = heads * v,
                   .m = c.rows,
                   .precision = c.precision};
  }
  XPD_RETURN_IF_ERROR(c.backend.MatMulGroup(problems));
  return absl::OkStatus();
}

// o[rows of MHA sequences]: keys/values of all visible positions come from
// the latent cache through kv_b_proj (so a cached prefix works the same way).
absl::Status MhaPart(const LayerContext& c, const AttentionWeights& w, int32_t layer,
                     const float* q, std::vector<AttentionSequence> sequences, float* o) {
  const ModelConfig& cfg = c.config;
  const int64_t heads = cfg.num_attention_heads, rank = cfg.kv_lora_rank;
  const int64_t width = cfg.latent_dim(), kv_width = cfg.qk_nope_head_dim + cfg.v_head_dim;
  int64_t total_keys = 0;
  for (const AttentionSequence& seq : sequences) total_keys += seq.start + seq.num_queries;
  float* latents = c.scratch.Floats(ScratchSlot::kMhaLatents, total_keys * width);
  float* kvs = c.scratch.Floats(ScratchSlot::kMhaKeysValues, total_keys * heads * kv_width);
  for (AttentionSequence& seq : sequences) {
    const int64_t keys = seq.start + seq.num_queries;
    for (int64_t t = 0; t < keys; ++t) {
      std::memcpy(latents + t * width, c.cache.Row(seq.block_table, layer, t),
                  sizeof(float) * width);
    }
    XPD_RETURN_IF_ERROR(Project(c, w.kv_b.matrix, latents, width, kvs, 0, keys));
    seq.kv = kvs;
    seq.k_pe = latents + rank;
    seq.k_pe_stride = width;
    latents += keys * width;
    kvs += keys * heads * kv_width;
  }
  return c.backend.MhaAttention({.q = q,
                                 .out = o,
                                 .heads = static_cast<int32_t>(heads),
                                 .nope_dim = static_cast<int32_t>(cfg.qk_nope_head_dim),
                                 .rope_dim = static_cast<int32_t>(cfg.qk_rope_head_dim),
                                 .v_dim = static_cast<int32_t>(cfg.v_head_dim),
                                 .softmax_scale = static_cast<float>(cfg.SoftmaxScale()),
                                 .sequences = sequences});
}

}  // namespace

absl::Status RunAttentionBlock(const LayerContext& c, const AttentionWeights& w, int32_t layer,
                               const float* x, float* h) {
  const ModelConfig& cfg = c.config;
  const int64_t n = c.rows, d = cfg.hidden_size, heads = cfg.num_attention_heads;
  const int64_t rank = cfg.kv_lora_rank, width = cfg.latent_dim(), dq = cfg.qk_head_dim();
  const float eps = static_cast<float>(cfg.rms_norm_eps);

  // Query path: x -> q_a -> norm -> q_b, rope on each head's last channels.
  float* cq = c.scratch.Floats(ScratchSlot::kQueryLatent, n * cfg.q_lora_rank);
  float* q = c.scratch.Floats(ScratchSlot::kQuery, n * heads * dq);
  float* kv = c.scratch.Floats(ScratchSlot::kKvLatent, n * width);
  // Both low-rank down-projections read x: one group.
  const kernels::MatMulArgs down[] = {
      {.x = x, .x_stride = d, .w = &w.q_a.matrix, .y = cq, .m = n, .precision = c.precision},
      {.x = x, .x_stride = d, .w = &w.kv_a.matrix, .y = kv, .m = n, .precision = c.precision}};
  XPD_RETURN_IF_ERROR(c.backend.MatMulGroup(down));
  XPD_RETURN_IF_ERROR(c.backend.RmsNorm({.x = cq,
                                         .weight = w.q_a_norm.data(),
                                         .y = cq,
                                         .rows = n,
                                         .dim = cfg.q_lora_rank,
                                         .eps = eps}));
  XPD_RETURN_IF_ERROR(Project(c, w.q_b.matrix, cq, 0, q, 0, n));
  XPD_RETURN_IF_ERROR(c.backend.ApplyRope({.x = q + cfg.qk_nope_head_dim,
                                           .row_stride = heads * dq,
                                           .head_stride = dq,
                                           .heads = static_cast<int32_t>(heads),
                                           .rows = n,
                                           .rope_dim = static_cast<int32_t>(cfg.qk_rope_head_dim),
                                           .positions = c.positions.data(),
                                           .inv_freq = c.inv_freq.data()}));

  // Key/value path: the latent [norm(c_kv) | rope(k_pe)] is what the cache keeps.
  XPD_RETURN_IF_ERROR(c.backend.RmsNorm({.x = kv,
                                         .x_stride = width,
                                         .weight = w.kv_a_norm.data(),
                                         .y = kv,
                                         .y_stride = width,
                                         .rows = n,
                                         .dim = rank,
                                         .eps = eps}));
  XPD_RETURN_IF_ERROR(c.backend.ApplyRope({.x = kv + rank,
                                           .row_stride = width,
                                           .head_stride = 0,
                                           .heads = 1,
                                           .rows = n,
                                           .rope_dim = static_cast<int32_t>(cfg.qk_rope_head_dim),
                                           .positions = c.positions.data(),
                                           .inv_freq = c.inv_freq.data()}));
  for (const SequenceRows& seq : c.sequences) {
    for (int32_t i = 0; i < seq.num_rows; ++i) {
      std::memcpy(c.cache.Row(seq.block_table.data(), layer, seq.start + i),
                  kv + (seq.first_row + i) * width, sizeof(float) * width);
    }
  }

  std::vector<AttentionSequence> latent_sequences, mha_sequences;
  for (const SequenceRows& seq : c.sequences) {
    AttentionSequence a{.query_row = seq.first_row,
                        .num_queries = seq.num_rows,
                        .start = seq.start,
                        .block_table = seq.block_table.data()};
    (UsesLatentForm(c, seq) ? latent_sequences : mha_sequences).push_back(a);
  }
  float* o = c.scratch.Floats(ScratchSlot::kAttentionOut, n * heads * cfg.v_head_dim);
  std::fill_n(o, n * heads * cfg.v_head_dim, 0.0f);
  if (!latent_sequences.empty()) {
    XPD_RETURN_IF_ERROR(LatentPart(c, w, layer, q, latent_sequences, o));
  }
  if (!mha_sequences.empty()) {
    XPD_RETURN_IF_ERROR(MhaPart(c, w, layer, q, std::move(mha_sequences), o));
  }
  return Project(c, w.o.matrix, o, 0, h, d, n, kernels::OutputMode::kAccumulate);
}

}  // namespace xpd::model
