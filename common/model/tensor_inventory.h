// The tensors a Hugging Face DeepSeek-V3 checkpoint holds for a given config
// (spec §2.1), and what they add up to: parameter counts and a per-rank
// memory plan for expert parallelism. Used by the dummy-checkpoint writer and
// by tools that size deployments.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/model/model_config.h"
#include "kernels/core/dtype.h"

namespace xpd::model {

enum class TensorKind {
  kEmbedding,      // model.embed_tokens, MTP embed_tokens
  kHead,           // lm_head, MTP shared_head.head
  kNorm,           // every RMSNorm weight
  kAttention,      // q_a/q_b/kv_a/kv_b/o projections
  kDenseMlp,       // gate/up/down of the first_k_dense_replace dense layers
  kRouter,         // mlp.gate.weight
  kRouterBias,     // mlp.gate.e_score_correction_bias (F32)
  kRoutedExpert,   // mlp.experts.{e}.*
  kSharedExpert,   // mlp.shared_experts.*
  kMtpProjection,  // MTP eh_proj
};

struct TensorSpec {
  std::string name;
  kernels::DType dtype = kernels::DType::kBF16;
  std::vector<int64_t> shape;
  TensorKind kind = TensorKind::kNorm;
  int64_t layer = -1;     // -1 for model.embed_tokens, model.norm and lm_head
  bool mtp = false;       // belongs to an MTP module (layer >= num_hidden_layers)
  int64_t expert = -1;    // routed expert index, else -1
  bool is_scale = false;  // an F32 weight_scale_inv; `scaled_weight` names its weight
  std::string scaled_weight;

  int64_t num_elements() const;
  int64_t size_bytes() const;
};

// Every tensor, in model order: embedding, layers 0..N-1, model.norm, lm_head,
// then the MTP modules. With fp8, the 2-D projection weights (attention, dense
// MLP, routed and shared experts, MTP block included) are F8_E4M3, each
// followed by its weight_scale_inv of shape [ceil(rows/Br), ceil(cols/Bc)]
// (block from config.quantization, else 128x128). Everything else is BF16
// except the F32 router correction bias.
std::vector<TensorSpec> CheckpointInventory(const ModelConfig& config, bool fp8);

struct ParameterCounts {
  int64_t total = 0;      // main model: embedding, layers, final norm, lm_head (no MTP)
  int64_t mtp = 0;        // MTP modules, including their embedding and head copies
  int64_t embedding = 0;  // model.embed_tokens alone
  // Main-model weights one token's forward pass multiplies with: everything
  // except the embedding table (one row is read, not multiplied) and the
  // routed experts the router does not pick (num_experts_per_tok of
  // n_routed_experts run per MoE layer).
  int64_t active_per_token = 0;
};
ParameterCounts CountParameters(const ModelConfig& config);

// Weight memory on each of `ep_ranks` expert-parallel ranks when attention,
// dense MLPs, shared experts, routers, norms, embedding and head are
// replicated and routed experts are split in contiguous index ranges.
struct MemoryPlan {
  int64_t ep_ranks = 1;
  int64_t experts_per_rank = 0;              // ceil(n_routed_experts / ep_ranks)
  int64_t replicated_bytes = 0;              // same on every rank
  int64_t routed_expert_bytes_per_rank = 0;  // on the fullest rank
  int64_t weight_bytes_per_rank() const { return replicated_bytes + routed_expert_bytes_per_rank; }
  // The same weights as the CPU engine holds them once loaded for BF16
  // compute: packed into tiles (FP8 block scales repeated per 32-row tile),
  // plus the absorbed MLA matrices W_UK^T and W_UV in BF16 beside kv_b_proj.
  int64_t cpu_replicated_bytes = 0;
  int64_t cpu_routed_expert_bytes_per_rank = 0;
  int64_t cpu_weight_bytes_per_rank() const {
    return cpu_replicated_bytes + cpu_routed_expert_bytes_per_rank;
  }
  // Latent KV cache (kv_lora_rank + qk_rope_head_dim values, BF16 as in the
  // spec) per token over the layers planned: num_hidden_layers, plus the MTP
  // layers if included. The CPU engine's cache holds f32, twice this.
  int64_t kv_bytes_per_token = 0;
};
MemoryPlan PlanMemory(const ModelConfig& config, bool fp8, int64_t ep_ranks, bool include_mtp);

}  // namespace xpd::model
