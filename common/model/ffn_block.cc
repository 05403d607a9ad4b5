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
  const kernels::MatMulArgs gate_up[] = {{.x = x,
                                          .x_stride = d,
                                          .w = &mlp.gate.matrix,
                                          .y = gate.data(),
                                          .m = rows,
                                          .precision = c.precision},
                                         {.x = x,
                                          .x_stride = d,
                                          .w = &mlp.up.matrix,
                                          .y = up.data(),
                                          .m = rows,
                                          .precision = c.precision}};
  XPD_RETURN_IF_ERROR(c.backend.MatMulGroup(gate_up));
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

  // Dispatch: group the (token, k) slots by expert; each expert's rows are
  // contiguous in `gathered`, so all experts run as one group of products.
  std::vector<std::vector<int64_t>> slots_of(experts);
  for (int64_t slot = 0; slot < n * top_k; ++slot) slots_of[ids[slot]].push_back(slot);
  std::vector<int64_t> order;  // gathered row -> slot
  std::vector<int64_t> first_row(experts + 1, 0);
  for (int64_t e = 0; e < experts; ++e) {
    first_row[e] = static_cast<int64_t>(order.size());
    if (!slots_of[e].empty() && !moe.experts[e].loaded()) {
      return absl::FailedPreconditionError(absl::StrCat("routed expert ", e, " is not held here"));
    }
    order.insert(order.end(), slots_of[e].begin(), slots_of[e].end());
  }
  first_row[experts] = static_cast<int64_t>(order.size());
  const int64_t routed_rows = static_cast<int64_t>(order.size());
  const int64_t width = cfg.moe_intermediate_size;
  std::vector<float> gathered(routed_rows * d), gate(routed_rows * width), up(routed_rows * width),
      slot_out(n * top_k * d);
  for (int64_t i = 0; i < routed_rows; ++i) {
    std::memcpy(&gathered[i * d], x + (order[i] / top_k) * d, sizeof(float) * d);
  }
  std::vector<kernels::MatMulArgs> problems;
  for (int64_t e = 0; e < experts; ++e) {
    const int64_t m = first_row[e + 1] - first_row[e];
    if (m == 0) continue;
    const float* in = &gathered[first_row[e] * d];
    problems.push_back({.x = in,
                        .x_stride = d,
                        .w = &moe.experts[e].gate.matrix,
                        .y = &gate[first_row[e] * width],
                        .m = m,
                        .precision = c.precision});
    problems.push_back({.x = in,
                        .x_stride = d,
                        .w = &moe.experts[e].up.matrix,
                        .y = &up[first_row[e] * width],
                        .m = m,
                        .precision = c.precision});
  }
  XPD_RETURN_IF_ERROR(c.backend.MatMulGroup(problems));
  XPD_RETURN_IF_ERROR(c.backend.SiluMul({.gate = gate.data(),
                                         .up = up.data(),
                                         .in_stride = width,
                                         .out = gate.data(),
                                         .out_stride = width,
                                         .rows = routed_rows,
                                         .dim = width}));
  problems.clear();
  for (int64_t e = 0; e < experts; ++e) {
    const int64_t m = first_row[e + 1] - first_row[e];
    if (m == 0) continue;
    problems.push_back({.x = &gate[first_row[e] * width],
                        .x_stride = width,
                        .w = &moe.experts[e].down.matrix,
                        .y = &gathered[first_row[e] * d],
                        .m = m,
                        .precision = c.precision});
  }
  XPD_RETURN_IF_ERROR(c.backend.MatMulGroup(problems));
  for (int64_t i = 0; i < routed_rows; ++i) {
    std::memcpy(&slot_out[order[i] * d], &gathered[i * d], sizeof(float) * d);
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
