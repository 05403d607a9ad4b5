// The architecture hyper-parameters of a DeepSeek-V3-class checkpoint, parsed
// once from config.json and immutable afterwards.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace xpd::model {

struct RopeScaling {
  std::string type = "yarn";  // config key "type" or "rope_type"; only "yarn" is accepted
  double factor = 40.0;
  int64_t original_max_position_embeddings = 4096;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 1.0;
};

struct Fp8Quantization {
  int32_t block_rows = 128;  // weight_block_size[0]
  int32_t block_cols = 128;  // weight_block_size[1]
  std::string scale_fmt;     // "" (fp32 scales) or "ue8m0"
};

struct ModelConfig {
  std::string model_type = "deepseek_v3";
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t moe_intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_nextn_predict_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t q_lora_rank = 0;  // V3 always has one; 0 is rejected
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  int64_t n_routed_experts = 0;
  int64_t n_shared_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t n_group = 0;
  int64_t topk_group = 0;
  int64_t first_k_dense_replace = 0;
  int64_t moe_layer_freq = 1;
  double routed_scaling_factor = 1.0;
  bool norm_topk_prob = true;
  std::string scoring_func = "sigmoid";  // only "sigmoid" accepted
  std::string topk_method = "noaux_tc";  // only "noaux_tc" accepted
  std::string hidden_act = "silu";       // only "silu" accepted
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  int64_t max_position_embeddings = 0;
  std::optional<RopeScaling> rope_scaling;      // absent = plain RoPE
  std::optional<Fp8Quantization> quantization;  // present when quantization_config is fp8
  int64_t bos_token_id = 0;
  int64_t eos_token_id = 1;
  bool tie_word_embeddings = false;  // true is rejected (V3 never ties)

  // Derived.
  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  int64_t latent_dim() const { return kv_lora_rank + qk_rope_head_dim; }  // cached per token
  bool IsMoeLayer(int64_t layer) const {
    return layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
  }
  double SoftmaxScale() const;  // qk_head_dim^-0.5 * mscale(factor, mscale_all_dim)^2
};

// Parses and validates; errors name the offending field, e.g.
// "config.json: field 'n_group' (3) must divide n_routed_experts (16)".
absl::StatusOr<ModelConfig> ParseModelConfig(const nlohmann::json& json);
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path);
// Inverse of ParseModelConfig (Hugging Face spelling), for checkpoint writers.
nlohmann::json ModelConfigToJson(const ModelConfig& config);

}  // namespace xpd::model
