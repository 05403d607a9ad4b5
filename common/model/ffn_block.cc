// Dense SwiGLU and MoE FFNs (spec §3.7). MoE: route every token, run each
// held expert once over the tokens routed to it, then combine each token's
// expert outputs in its own top-k order, so the sum never depends on which
// other tokens share the batch.
#include <cstring>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/model/decoder_layer.h"
#include "common/transport/expert_exchange.h"

namespace xpd::model {
namespace {

bool RoundsOperands(const LayerContext& c) { return c.precision == kernels::Precision::kBF16; }

// For kBF16 compute: the FFN input rounded to bf16 once, so that every
// product reading it skips its own rounding (MatMulArgs::x_is_bf16). The
// router still reads the unrounded x. Returns x itself for f32 compute.
absl::StatusOr<const float*> RoundedOperand(const LayerContext& c, const float* x, int64_t rows) {
  if (!RoundsOperands(c)) return x;
  const int64_t d = c.config.hidden_size;
  float* rounded = c.scratch.Floats(ScratchSlot::kFfnOperand, rows * d);
  XPD_RETURN_IF_ERROR(c.backend.RoundToBf16({.x = x, .y = rounded, .rows = rows, .dim = d}));
  return rounded;
}

// y[rows, D] (op)= down(silu(gate(x)) * up(x)); x as RoundedOperand returns it.
absl::Status RunMlp(const LayerContext& c, const MlpWeights& mlp, const float* x, int64_t rows,
                    float* y, kernels::OutputMode mode) {
  const int64_t d = c.config.hidden_size, width = mlp.gate.matrix.rows;
  const bool rounded = RoundsOperands(c);
  float* gate = c.scratch.Floats(ScratchSlot::kMlpGate, rows * width);
  float* up = c.scratch.Floats(ScratchSlot::kMlpUp, rows * width);
  const kernels::MatMulArgs gate_up[] = {{.x = x,
                                          .x_stride = d,
                                          .w = &mlp.gate.matrix,
                                          .y = gate,
                                          .m = rows,
                                          .precision = c.precision,
                                          .x_is_bf16 = rounded},
                                         {.x = x,
                                          .x_stride = d,
                                          .w = &mlp.up.matrix,
                                          .y = up,
                                          .m = rows,
                                          .precision = c.precision,
                                          .x_is_bf16 = rounded}};
  XPD_RETURN_IF_ERROR(c.backend.MatMulGroup(gate_up));
  XPD_RETURN_IF_ERROR(c.backend.SiluMul({.gate = gate,
                                         .up = up,
                                         .in_stride = width,
                                         .out = gate,
                                         .out_stride = width,
                                         .rows = rows,
                                         .dim = width,
                                         .round_to_bf16 = rounded}));
  return c.backend.MatMul({.x = gate,
                           .x_stride = width,
                           .w = &mlp.down.matrix,
                           .y = y,
                           .y_stride = d,
                           .m = rows,
                           .precision = c.precision,
                           .output = mode,
                           .x_is_bf16 = rounded});
}

// Runs held experts over the rows the exchange gathered for them, as one
// grouped pass per projection.
transport::ExpertCompute ExpertComputeFor(const LayerContext& c, const MoeWeights& moe) {
  return [&c, &moe](std::span<const transport::ExpertBatch> batches) -> absl::Status {
    const int64_t d = c.config.hidden_size, width = c.config.moe_intermediate_size;
    int64_t total = 0;
    for (const transport::ExpertBatch& b : batches) {
      if (!moe.experts[b.expert].loaded()) {
        return absl::FailedPreconditionError(
            absl::StrCat("routed expert ", b.expert, " is not held here"));
      }
      total += b.rows;
    }
    if (total == 0) return absl::OkStatus();
    // Rows arrive rounded: RunMoe dispatches RoundedOperand's copy.
    const bool rounded = RoundsOperands(c);
    float* gate = c.scratch.Floats(ScratchSlot::kExpertGate, total * width);
    float* up = c.scratch.Floats(ScratchSlot::kExpertUp, total * width);
    std::vector<kernels::MatMulArgs> problems;
    int64_t row = 0;
    for (const transport::ExpertBatch& b : batches) {
      problems.push_back({.x = b.in,
                          .x_stride = d,
                          .w = &moe.experts[b.expert].gate.matrix,
                          .y = &gate[row * width],
                          .m = b.rows,
                          .precision = c.precision,
                          .x_is_bf16 = rounded});
      problems.push_back({.x = b.in,
                          .x_stride = d,
                          .w = &moe.experts[b.expert].up.matrix,
                          .y = &up[row * width],
                          .m = b.rows,
                          .precision = c.precision,
                          .x_is_bf16 = rounded});
      row += b.rows;
    }
    XPD_RETURN_IF_ERROR(c.backend.MatMulGroup(problems));
    XPD_RETURN_IF_ERROR(c.backend.SiluMul({.gate = gate,
                                           .up = up,
                                           .in_stride = width,
                                           .out = gate,
                                           .out_stride = width,
                                           .rows = total,
                                           .dim = width,
                                           .round_to_bf16 = rounded}));
    problems.clear();
    row = 0;
    for (const transport::ExpertBatch& b : batches) {
      problems.push_back({.x = &gate[row * width],
                          .x_stride = width,
                          .w = &moe.experts[b.expert].down.matrix,
                          .y = b.out,
                          .m = b.rows,
                          .precision = c.precision,
                          .x_is_bf16 = rounded});
      row += b.rows;
    }
    return c.backend.MatMulGroup(problems);
  };
}

absl::Status RunMoe(const LayerContext& c, const MoeWeights& moe, int32_t layer, const float* x,
                    float* h) {
  const ModelConfig& cfg = c.config;
  const int64_t n = c.rows, d = cfg.hidden_size, experts = cfg.n_routed_experts;
  const int64_t top_k = cfg.num_experts_per_tok;

  // Router in f32 whatever the compute precision (spec pitfall 14).
  float* logits = c.scratch.Floats(ScratchSlot::kRouterLogits, n * experts);
  XPD_RETURN_IF_ERROR(c.backend.MatMul({.x = x,
                                        .x_stride = d,
                                        .w = &moe.router.matrix,
                                        .y = logits,
                                        .m = n,
                                        .precision = kernels::Precision::kF32}));
  std::vector<int32_t> ids(n * top_k);
  std::vector<float> weights(n * top_k);
  XPD_RETURN_IF_ERROR(c.backend.MoeRouting({.logits = logits,
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

  // Routed experts through the exchange: local here, all-to-all in an EP group.
  XPD_ASSIGN_OR_RETURN(const float* operand, RoundedOperand(c, x, n));
  const transport::ExpertCompute compute = ExpertComputeFor(c, moe);
  float* routed = c.scratch.Floats(ScratchSlot::kRoutedOut, n * d);
  XPD_RETURN_IF_ERROR(c.exchange.DispatchCombine({.layer = layer,
                                                  .rows = n,
                                                  .hidden = d,
                                                  .top_k = static_cast<int32_t>(top_k),
                                                  .x = operand,
                                                  .expert_ids = ids.data(),
                                                  .weights = weights.data(),
                                                  .out = routed},
                                                 compute));

  // y = routed + shared, then the residual add.
  if (!moe.shared.loaded()) {
    for (int64_t i = 0; i < n * d; ++i) h[i] += routed[i];
    return absl::OkStatus();
  }
  float* shared = c.scratch.Floats(ScratchSlot::kSharedOut, n * d);
  XPD_RETURN_IF_ERROR(RunMlp(c, moe.shared, operand, n, shared, kernels::OutputMode::kOverwrite));
  for (int64_t i = 0; i < n * d; ++i) h[i] += routed[i] + shared[i];
  return absl::OkStatus();
}

}  // namespace

absl::Status RunMoeExchangeOnly(const LayerContext& c, const MoeWeights& moe, int32_t layer) {
  return c.exchange.DispatchCombine({.layer = layer,
                                     .rows = 0,
                                     .hidden = c.config.hidden_size,
                                     .top_k = static_cast<int32_t>(c.config.num_experts_per_tok)},
                                    ExpertComputeFor(c, moe));
}

absl::Status RunFfnBlock(const LayerContext& c, const DecoderLayerWeights& w, int32_t layer,
                         const float* x, float* h) {
  if (w.is_moe) return RunMoe(c, w.moe, layer, x, h);
  XPD_ASSIGN_OR_RETURN(const float* operand, RoundedOperand(c, x, c.rows));
  return RunMlp(c, w.dense, operand, c.rows, h, kernels::OutputMode::kAccumulate);
}

}  // namespace xpd::model
