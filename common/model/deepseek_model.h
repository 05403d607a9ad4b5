// DeepSeek-V3 forward pass (spec §3, §4): embedding, MLA decoder layers with
// dense or MoE FFNs, final norm, LM head, and the MTP module. Stateless apart
// from its weights: the KV cache and the batch come with every call, so the
// same model serves any scheduler.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "common/model/checkpoint.h"
#include "common/model/forward_batch.h"
#include "common/model/model_weights.h"
#include "common/transport/expert_exchange.h"
#include "kernels/backend/backend.h"

namespace xpd::model {

class DeepSeekModel {
 public:
  static absl::StatusOr<std::unique_ptr<DeepSeekModel>> Load(const Checkpoint& checkpoint,
                                                             const LoadOptions& options,
                                                             kernels::Backend* backend);

  const ModelConfig& config() const { return config_; }
  // Routes MoE layers through an expert-parallel group (not owned); the
  // default keeps every expert local.
  void set_expert_exchange(transport::ExpertExchange* exchange) {
    exchange_ = exchange != nullptr ? exchange : &local_exchange_;
  }
  kernels::Precision precision() const { return precision_; }
  bool has_mtp() const { return !weights_.mtp.empty(); }
  // Layers the latent cache must hold: the main stack plus loaded MTP layers.
  int32_t cache_layers() const;

  // One step of the main model. Writes each new token's latent into `cache`.
  absl::Status Forward(const ForwardBatch& batch, const kernels::PagedLatentCache& cache,
                       ForwardOutput* output) const;

  // The MTP module over entries (hidden h_i after the final norm, next token
  // t_{i+1}, position i): logits predicting t_{i+2} for every entry. Uses the
  // MTP layer's own slice of the cache (layer index num_hidden_layers).
  struct MtpSequence {
    const float* hidden = nullptr;         // [tokens.size(), D]
    std::span<const int32_t> next_tokens;  // t_{i+1}
    int64_t start = 0;
    std::span<const int32_t> block_table;
  };
  absl::Status ForwardMtp(std::span<const MtpSequence> sequences,
                          const kernels::PagedLatentCache& cache, std::vector<float>* logits,
                          RoutingTrace* routing = nullptr) const;

  // Expert parallelism. A rank with no tokens in a step still serves its
  // peers' tokens: IdleStep runs every MoE layer's exchange with no rows.
  absl::Status IdleStep() const;
  // Model layer index of every MoE layer of the main stack.
  std::vector<int32_t> moe_layers() const;
  bool holds_expert(int32_t layer, int32_t expert) const;
  // Bytes of one routed expert's weights as held at this precision.
  int64_t routed_expert_bytes() const;
  // Loads routed experts from the checkpoint (touching their pages, so the
  // first step that uses them does not stall) and answers the bytes loaded.
  // Safe while another thread runs Forward only for experts that the current
  // placement does not route to this rank; release experts only between
  // steps, after the placement stopped routing to them.
  absl::StatusOr<int64_t> LoadRoutedExperts(int32_t layer, std::span<const int32_t> experts);
  void ReleaseRoutedExperts(int32_t layer, std::span<const int32_t> experts);

 private:
  DeepSeekModel() = default;
  transport::LocalExpertExchange local_exchange_;
  transport::ExpertExchange* exchange_ = nullptr;  // local_exchange_ unless set for an EP group
  const Checkpoint* checkpoint_ = nullptr;         // outlives the model (weights are views into it)
  ModelConfig config_;
  kernels::Precision precision_ = kernels::Precision::kF32;
  ModelWeights weights_;
  std::vector<float> inv_freq_;
  kernels::Backend* backend_ = nullptr;
};

}  // namespace xpd::model
