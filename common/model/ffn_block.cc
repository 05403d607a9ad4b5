// Dense SwiGLU and MoE FFNs (spec §3.7). MoE: route every token, run each
// held expert once over the tokens routed to it, then combine each token's
// expert outputs in its own top-k order, so the sum never depends on which
// other tokens share the batch.
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/model/decoder_layer.h"

namespace xpd::model {
namespace {

// y[rows, D] (op)= down(silu(gate(x)) * up(x)).
absl::Status RunMlp(const LayerContext& c, const MlpWeights& mlp, const float* x, int64_t rows,
                    float* y, kernels::OutputMode mode) {
  const int64_t d = c.config.hidden_size, width = mlp.gate.matrix.rows;
  std::vector<float> gate(rows * width), up(rows * width);
  XPD_RETURN_IF_ERROR(Project(c, mlp.gate.matrix, x, d, gate.data(), width, rows));
  XPD_RETURN_IF_ERROR(Project(c, mlp.up.matrix, x, d, up.data(), width, rows));
  XPD_RETURN_IF_ERROR(c.backend.SiluMul({.gate = gate.data(),
                                         .up = up.data(),
                                         .in_stride = width,
                                         .out = gate.data(),
                                         .out_stride = width,
                                         .rows = rows,
                                         .dim = width}));
  return Project(c, mlp.down.matrix, gate.data(), width, y, d, rows, mode);
}

absl::Status RunMoe(const LayerContext& c, const MoeWeights& moe, const float* x, float* h) {
  const ModelConfig& cfg = c.config;
  const int64_t n = c.rows, d = cfg.hidden_size, experts = cfg.n_routed_experts;
  const int64_t top_k = cfg.num_experts_per_tok;

  // Router in f32 whatever the compute precision (spec pitfall 14).
  std::vector<float> logits(n * experts);
  XPD_RETURN_IF_ERROR(c.backend.MatMul({.x = x,
                                        .x_stride = d,
                                        .w = &moe.router.matrix,
                                        .y = logits.data(),
                                        .m = n,
                                        .precision = kernels::Precision::kF32}));
  std::vector<int32_t> ids(n * top_k);
  std::vector<float> weights(n * top_k);
  XPD_RETURN_IF_ERROR(c.backend.MoeRouting({.logits = logits.data(),
                                            .bias = moe.correction_bias.data(),
                                            .expert_ids = ids.data(),
                                            .expert_weights = weights.data(),
                                            .num_tokens = static_cast<int32_t>(n),
                                            .num_experts = static_cast<int32_t>(experts),
                                            .num_groups = static_cast<int32_t>(cfg.n_group),
                                            .top_groups = static_cast<int32_t>(cfg.topk_group),
                                            .top_k = static_cast<int32_t>(top_k),
                                            .scale = static_cast<float>(cfg.routed_scaling_factor),
                                            .normalize = cfg.norm_topk_prob}));
  if (c.routing != nullptr) {
    c.routing->expert_ids.push_back(ids);
    c.routing->expert_weights.push_back(weights);
  }

  // Dispatch: the (token, k) slots each expert serves.
  std::vector<std::vector<int64_t>> slots_of(experts);
  for (int64_t slot = 0; slot < n * top_k; ++slot) slots_of[ids[slot]].push_back(slot);
  std::vector<float> slot_out(n * top_k * d);
  std::vector<float> gathered, expert_out;
  for (int64_t e = 0; e < experts; ++e) {
    const std::vector<int64_t>& slots = slots_of[e];
    if (slots.empty()) continue;
    if (!moe.experts[e].loaded()) {
      return absl::FailedPreconditionError(absl::StrCat("routed expert ", e, " is not held here"));
    }
    const int64_t m = static_cast<int64_t>(slots.size());
    gathered.resize(m * d);
    expert_out.resize(m * d);
    for (int64_t i = 0; i < m; ++i) {
      std::memcpy(&gathered[i * d], x + (slots[i] / top_k) * d, sizeof(float) * d);
    }
    XPD_RETURN_IF_ERROR(RunMlp(c, moe.experts[e], gathered.data(), m, expert_out.data(),
                               kernels::OutputMode::kOverwrite));
    for (int64_t i = 0; i < m; ++i) {
      std::memcpy(&slot_out[slots[i] * d], &expert_out[i * d], sizeof(float) * d);
    }
  }

  // Combine: y = sum_k w_k * expert_k(x) + shared(x), then the residual add.
  std::vector<float> y(n * d, 0.0f);
  if (moe.shared.loaded()) {
    XPD_RETURN_IF_ERROR(RunMlp(c, moe.shared, x, n, y.data(), kernels::OutputMode::kOverwrite));
  }
  for (int64_t r = 0; r < n; ++r) {
    float* out = &h[r * d];
    const float* shared = &y[r * d];
    for (int64_t i = 0; i < d; ++i) {
      float routed = 0.0f;
      for (int64_t k = 0; k < top_k; ++k) {
        routed += weights[r * top_k + k] * slot_out[(r * top_k + k) * d + i];
      }
      out[i] += routed + shared[i];
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RunFfnBlock(const LayerContext& c, const DecoderLayerWeights& w, const float* x,
                         float* h) {
  if (w.is_moe) return RunMoe(c, w.moe, x, h);
  return RunMlp(c, w.dense, x, c.rows, h, kernels::OutputMode::kAccumulate);
}

}  // namespace xpd::model
