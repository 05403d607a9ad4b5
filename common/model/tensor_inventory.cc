#include "common/model/tensor_inventory.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/core/weight_matrix.h"

namespace xpd::model {
namespace {

using kernels::DType;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Appends tensors of one module (global, a decoder layer or an MTP module).
class InventoryBuilder {
 public:
  InventoryBuilder(const ModelConfig& config, bool fp8, std::vector<TensorSpec>* out)
      : config_(config), fp8_(fp8), out_(out) {
    if (config.quantization) {
      block_rows_ = config.quantization->block_rows;
      block_cols_ = config.quantization->block_cols;
    }
  }

  void Add(std::string name, std::vector<int64_t> shape, TensorKind kind, int64_t layer,
           int64_t expert = -1, DType dtype = DType::kBF16) {
    TensorSpec spec;
    spec.name = std::move(name);
    spec.dtype = dtype;
    spec.shape = std::move(shape);
    spec.kind = kind;
    spec.layer = layer;
    spec.mtp = layer >= config_.num_hidden_layers;
    spec.expert = expert;
    out_->push_back(std::move(spec));
  }

  // A 2-D projection: FP8 plus its block scales when quantizing, else BF16.
  void AddProjection(const std::string& name, int64_t rows, int64_t cols, TensorKind kind,
                     int64_t layer, int64_t expert = -1) {
    Add(name, {rows, cols}, kind, layer, expert, fp8_ ? DType::kF8E4M3 : DType::kBF16);
    if (!fp8_) return;
    const std::string base = name.substr(0, name.size() - std::string("weight").size());
    Add(base + "weight_scale_inv", {CeilDiv(rows, block_rows_), CeilDiv(cols, block_cols_)}, kind,
        layer, expert, DType::kF32);
    out_->back().is_scale = true;
    out_->back().scaled_weight = name;
  }

  void AddSwiGlu(const std::string& prefix, int64_t width, TensorKind kind, int64_t layer,
                 int64_t expert = -1) {
    const int64_t d = config_.hidden_size;
    AddProjection(prefix + "gate_proj.weight", width, d, kind, layer, expert);
    AddProjection(prefix + "up_proj.weight", width, d, kind, layer, expert);
    AddProjection(prefix + "down_proj.weight", d, width, kind, layer, expert);
  }

  // One decoder block (main layer or the block inside an MTP module).
  void AddBlock(int64_t layer) {
    const ModelConfig& c = config_;
    const std::string p = absl::StrCat("model.layers.", layer, ".");
    const int64_t d = c.hidden_size, h = c.num_attention_heads;
    Add(p + "input_layernorm.weight", {d}, TensorKind::kNorm, layer);
    AddProjection(p + "self_attn.q_a_proj.weight", c.q_lora_rank, d, TensorKind::kAttention, layer);
    Add(p + "self_attn.q_a_layernorm.weight", {c.q_lora_rank}, TensorKind::kNorm, layer);
    AddProjection(p + "self_attn.q_b_proj.weight", h * c.qk_head_dim(), c.q_lora_rank,
                  TensorKind::kAttention, layer);
    AddProjection(p + "self_attn.kv_a_proj_with_mqa.weight", c.latent_dim(), d,
                  TensorKind::kAttention, layer);
    Add(p + "self_attn.kv_a_layernorm.weight", {c.kv_lora_rank}, TensorKind::kNorm, layer);
    AddProjection(p + "self_attn.kv_b_proj.weight", h * (c.qk_nope_head_dim + c.v_head_dim),
                  c.kv_lora_rank, TensorKind::kAttention, layer);
    AddProjection(p + "self_attn.o_proj.weight", d, h * c.v_head_dim, TensorKind::kAttention,
                  layer);
    Add(p + "post_attention_layernorm.weight", {d}, TensorKind::kNorm, layer);
    // MTP blocks use the same rule, which makes them MoE (spec §2.1: 61 >= 3).
    if (!c.IsMoeLayer(layer)) {
      AddSwiGlu(p + "mlp.", c.intermediate_size, TensorKind::kDenseMlp, layer);
      return;
    }
    Add(p + "mlp.gate.weight", {c.n_routed_experts, d}, TensorKind::kRouter, layer);
    Add(p + "mlp.gate.e_score_correction_bias", {c.n_routed_experts}, TensorKind::kRouterBias,
        layer, -1, DType::kF32);
    for (int64_t e = 0; e < c.n_routed_experts; ++e) {
      AddSwiGlu(absl::StrCat(p, "mlp.experts.", e, "."), c.moe_intermediate_size,
                TensorKind::kRoutedExpert, layer, e);
    }
    if (c.n_shared_experts > 0) {
      AddSwiGlu(p + "mlp.shared_experts.", c.n_shared_experts * c.moe_intermediate_size,
                TensorKind::kSharedExpert, layer);
    }
  }

 private:
  const ModelConfig& config_;
  bool fp8_;
  std::vector<TensorSpec>* out_;
  int64_t block_rows_ = 128, block_cols_ = 128;
};

}  // namespace

int64_t TensorSpec::num_elements() const {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  return count;
}

int64_t TensorSpec::size_bytes() const { return num_elements() * kernels::DTypeSize(dtype); }

std::vector<TensorSpec> CheckpointInventory(const ModelConfig& config, bool fp8) {
  std::vector<TensorSpec> out;
  InventoryBuilder b(config, fp8, &out);
  const int64_t v = config.vocab_size, d = config.hidden_size;
  b.Add("model.embed_tokens.weight", {v, d}, TensorKind::kEmbedding, -1);
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) b.AddBlock(layer);
  b.Add("model.norm.weight", {d}, TensorKind::kNorm, -1);
  b.Add("lm_head.weight", {v, d}, TensorKind::kHead, -1);
  for (int64_t i = 0; i < config.num_nextn_predict_layers; ++i) {
    const int64_t layer = config.num_hidden_layers + i;
    const std::string p = absl::StrCat("model.layers.", layer, ".");
    b.Add(p + "embed_tokens.weight", {v, d}, TensorKind::kEmbedding, layer);
    b.Add(p + "enorm.weight", {d}, TensorKind::kNorm, layer);
    b.Add(p + "hnorm.weight", {d}, TensorKind::kNorm, layer);
    b.Add(p + "eh_proj.weight", {d, 2 * d}, TensorKind::kMtpProjection, layer);
    b.AddBlock(layer);
    b.Add(p + "shared_head.norm.weight", {d}, TensorKind::kNorm, layer);
    b.Add(p + "shared_head.head.weight", {v, d}, TensorKind::kHead, layer);
  }
  return out;
}

ParameterCounts CountParameters(const ModelConfig& config) {
  ParameterCounts counts;
  int64_t routed_main = 0;
  for (const TensorSpec& t : CheckpointInventory(config, /*fp8=*/false)) {
    const int64_t n = t.num_elements();
    if (t.mtp) {
      counts.mtp += n;
      continue;
    }
    counts.total += n;
    if (t.kind == TensorKind::kEmbedding) {
      counts.embedding += n;
    } else if (t.kind == TensorKind::kRoutedExpert) {
      routed_main += n;
    } else {
      counts.active_per_token += n;
    }
  }
  // Every expert has the same size, so the chosen ones are an exact fraction.
  counts.active_per_token += routed_main / config.n_routed_experts * config.num_experts_per_tok;
  return counts;
}

namespace {

// What the CPU engine holds for a checkpoint tensor once loaded for BF16
// compute (common/model/model_weights.cc): projections packed into tiles
// (FP8 scales as per-tile scale lines, so scale tensors add nothing of their
// own), kv_b_proj plus its absorbed W_UK^T and W_UV in BF16; the rest as
// stored.
int64_t LoadedBytes(const TensorSpec& t, const ModelConfig& config) {
  if (t.is_scale) return 0;
  switch (t.kind) {
    case TensorKind::kEmbedding:
    case TensorKind::kNorm:
    case TensorKind::kRouter:
    case TensorKind::kRouterBias:
      return t.size_bytes();
    default:
      break;
  }
  const bool f8 = t.dtype == kernels::DType::kF8E4M3;
  kernels::WeightMatrix w{
      .dtype = t.dtype,
      .layout = f8 ? kernels::WeightLayout::kF8Tiles32 : kernels::WeightLayout::kBf16Tiles32,
      .rows = t.shape[0],
      .cols = t.shape[1]};
  if (config.quantization) {
    w.block_rows = config.quantization->block_rows;
    w.block_cols = config.quantization->block_cols;
  }
  int64_t bytes = kernels::StoredBytes(w);
  if (t.name.ends_with("kv_b_proj.weight")) {
    const int64_t heads = config.num_attention_heads, rank = config.kv_lora_rank;
    bytes += heads * rank * (config.qk_nope_head_dim + config.v_head_dim) * 2;
  }
  return bytes;
}

}  // namespace

MemoryPlan PlanMemory(const ModelConfig& config, bool fp8, int64_t ep_ranks, bool include_mtp) {
  MemoryPlan plan;
  plan.ep_ranks = ep_ranks < 1 ? 1 : ep_ranks;
  plan.experts_per_rank = CeilDiv(config.n_routed_experts, plan.ep_ranks);
  int64_t expert0_bytes = 0;  // expert 0 over all MoE layers; all experts are equal
  int64_t expert0_loaded = 0;
  for (const TensorSpec& t : CheckpointInventory(config, fp8)) {
    if (t.mtp && !include_mtp) continue;
    const int64_t loaded = LoadedBytes(t, config);
    if (t.kind == TensorKind::kRoutedExpert) {
      if (t.expert == 0) expert0_bytes += t.size_bytes(), expert0_loaded += loaded;
    } else {
      plan.replicated_bytes += t.size_bytes();
      plan.cpu_replicated_bytes += loaded;
    }
  }
  plan.routed_expert_bytes_per_rank = expert0_bytes * plan.experts_per_rank;
  plan.cpu_routed_expert_bytes_per_rank = expert0_loaded * plan.experts_per_rank;
  const int64_t layers =
      config.num_hidden_layers + (include_mtp ? config.num_nextn_predict_layers : 0);
  plan.kv_bytes_per_token = layers * config.latent_dim() * 2;
  return plan;
}

}  // namespace xpd::model
