// Every weight of a DeepSeek-V3 model, checked against the config and made
// ready for the kernels. BF16 and FP8 projections (and F32 ones converted to
// BF16 for BF16 compute) are packed into the matmul kernels' tiles and own
// their memory, as do the absorbed MLA matrices and the norm vectors; the
// rest (F32 projections for f32 compute, the embedding, the router) are views
// into the mmap'ed checkpoint.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/checkpoint.h"
#include "kernels/core/weight_matrix.h"
#include "kernels/matmul/matmul.h"

namespace xpd::model {

struct Linear {
  kernels::WeightMatrix matrix;
  std::shared_ptr<const void> storage;  // set when the matrix was converted
};

struct AttentionWeights {
  std::vector<float> input_norm;  // [D]
  Linear q_a;                     // [q_lora_rank, D]
  std::vector<float> q_a_norm;    // [q_lora_rank]
  Linear q_b;                     // [H * qk_head_dim, q_lora_rank]
  Linear kv_a;                    // [kv_lora_rank + rope, D]
  std::vector<float> kv_a_norm;   // [kv_lora_rank]
  Linear kv_b;                    // [H * (nope + v), kv_lora_rank]
  Linear o;                       // [D, H * v]
  // Absorbed form, derived from kv_b once at load (spec §3.6.3):
  // Packed into tiles when each head's rows start one (kv_lora_rank, v a
  // multiple of 32, as in DeepSeek-V3), row-major otherwise.
  Linear uk_t;  // [H * kv_lora_rank, nope]: head h rows = W_UK[h]^T
  Linear uv;    // [H * v, kv_lora_rank]:    head h rows = W_UV[h]
};

struct MlpWeights {  // SwiGLU: down(silu(gate(x)) * up(x))
  Linear gate, up, down;
  bool loaded() const { return gate.matrix.data != nullptr; }
};

struct MoeWeights {
  Linear router;                       // [E, D], always evaluated in f32
  std::vector<float> correction_bias;  // [E]
  std::vector<MlpWeights> experts;     // [E]; unloaded experts have null matrices
  MlpWeights shared;                   // width n_shared_experts * moe_intermediate_size
};

struct DecoderLayerWeights {
  AttentionWeights attention;
  std::vector<float> post_attention_norm;  // [D]
  bool is_moe = false;
  MlpWeights dense;  // when !is_moe
  MoeWeights moe;    // when is_moe
};

struct MtpWeights {                 // one multi-token-prediction module (spec §4)
  std::vector<float> enorm, hnorm;  // [D]
  Linear eh_proj;                   // [D, 2D]: embedding columns first
  DecoderLayerWeights block;
  std::vector<float> head_norm;  // shared_head.norm
  Linear head;                   // shared_head.head [V, D]
  kernels::WeightMatrix embed;   // embed_tokens [V, D]
};

struct LoadOptions {
  kernels::Precision precision = kernels::Precision::kF32;
  bool load_mtp = true;  // ignored when the checkpoint has no MTP layer
  // Which routed experts this rank holds (layer, expert) -> bool; empty = all.
  // Called from several loading threads at once.
  std::function<bool(int64_t layer, int64_t expert)> hold_expert;
  // Threads that load (convert, pack) a layer's routed experts side by side;
  // 0 means one per core. Loading is mostly page faults and copies, which
  // scale with cores.
  int load_threads = 0;
  // Called after each decoder layer is loaded: (layers done, layers total).
  std::function<void(int64_t, int64_t)> progress;
};

struct ModelWeights {
  kernels::WeightMatrix embed;  // [V, D], BF16 or F32 rows
  std::vector<DecoderLayerWeights> layers;
  std::vector<float> final_norm;
  Linear lm_head;
  std::vector<MtpWeights> mtp;  // empty unless loaded
};

absl::StatusOr<ModelWeights> LoadModelWeights(const Checkpoint& checkpoint,
                                              const LoadOptions& options);

// One routed expert of one layer, as LoadModelWeights would have loaded it:
// for ranks whose expert placement changes while they serve.
absl::StatusOr<MlpWeights> LoadRoutedExpert(const Checkpoint& checkpoint,
                                            kernels::Precision precision, int64_t layer,
                                            int64_t expert);

// Bytes of an expert's three matrices as held (block scales included).
int64_t MlpBytes(const MlpWeights& mlp);

}  // namespace xpd::model
