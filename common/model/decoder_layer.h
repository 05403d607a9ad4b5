// One DeepSeek-V3 decoder layer over a flattened batch: MLA attention
// (mla_block.cc) and the dense or MoE FFN (ffn_block.cc), each a pre-norm
// residual update of the hidden rows.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "common/model/forward_batch.h"
#include "common/model/forward_scratch.h"
#include "common/model/model_config.h"
#include "common/model/model_weights.h"
#include "common/transport/expert_exchange.h"
#include "kernels/backend/backend.h"

namespace xpd::model {

// A sequence's slice of the flattened batch.
struct SequenceRows {
  int64_t first_row = 0;
  int32_t num_rows = 0;
  int64_t start = 0;  // position of its first row
  std::span<const int32_t> block_table;
};

struct LayerContext {
  const ModelConfig& config;
  kernels::Backend& backend;
  kernels::Precision precision;
  std::span<const float> inv_freq;
  const kernels::PagedLatentCache& cache;
  std::span<const SequenceRows> sequences;
  std::span<const int64_t> positions;  // [rows]
  int64_t rows = 0;
  AttentionForm attention = AttentionForm::kAuto;
  RoutingTrace* routing = nullptr;      // appended to per MoE layer when set
  transport::ExpertExchange& exchange;  // MoE dispatch/combine across the EP group
  ForwardScratch& scratch;              // the layers' temporaries, reused layer after layer
};

// h[rows, D] += Attention(RMSNorm(h)); h += FFN(RMSNorm(h)).
absl::Status RunDecoderLayer(const LayerContext& context, const DecoderLayerWeights& weights,
                             int32_t cache_layer, float* h);

// h += MLA(x) for normalized rows x; writes the rows' latents to the cache.
absl::Status RunAttentionBlock(const LayerContext& context, const AttentionWeights& weights,
                               int32_t cache_layer, const float* x, float* h);
// h += FFN(x) for normalized rows x.
absl::Status RunFfnBlock(const LayerContext& context, const DecoderLayerWeights& weights,
                         int32_t layer, const float* x, float* h);

// The MoE layer's expert exchange for a rank with no tokens of its own: its
// experts still serve the group's tokens.
absl::Status RunMoeExchangeOnly(const LayerContext& context, const MoeWeights& weights,
                                int32_t layer);

// y[rows, w.rows] (op)= x[rows, w.cols] * W^T on the context's backend.
absl::Status Project(const LayerContext& context, const kernels::WeightMatrix& w, const float* x,
                     int64_t x_stride, float* y, int64_t y_stride, int64_t rows,
                     kernels::OutputMode mode = kernels::OutputMode::kOverwrite);

}  // namespace xpd::model
