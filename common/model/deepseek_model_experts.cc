// The parts of DeepSeekModel an expert-parallel rank needs: serving its
// peers' tokens when it has none, and changing which routed experts it holds
// when the placement moves.
#include <atomic>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/model/decoder_layer.h"
#include "common/model/deepseek_model.h"

namespace xpd::model {
namespace {

// Reads one byte per page so the weights are resident before a step needs them.
void TouchPages(const MlpWeights& mlp) {
  uint8_t sum = 0;
  for (const Linear* l : {&mlp.gate, &mlp.up, &mlp.down}) {
    const auto* bytes = static_cast<const uint8_t*>(l->matrix.data);
    const int64_t size = MlpBytes({.gate = *l});
    for (int64_t i = 0; i < size; i += 4096) sum += bytes[i];
  }
  static std::atomic<uint8_t> sink;
  sink.fetch_add(sum, std::memory_order_relaxed);
}

}  // namespace

absl::Status DeepSeekModel::IdleStep() const {
  const kernels::PagedLatentCache no_cache;
  ForwardScratch scratch;
  const LayerContext context{.config = config_,
                             .backend = *backend_,
                             .precision = precision_,
                             .inv_freq = inv_freq_,
                             .cache = no_cache,
                             .rows = 0,
                             .exchange = *exchange_,
                             .scratch = scratch};
  for (size_t layer = 0; layer < weights_.layers.size(); ++layer) {
    if (!weights_.layers[layer].is_moe) continue;
    XPD_RETURN_IF_ERROR(
        RunMoeExchangeOnly(context, weights_.layers[layer].moe, static_cast<int32_t>(layer)));
  }
  return absl::OkStatus();
}

std::vector<int32_t> DeepSeekModel::moe_layers() const {
  std::vector<int32_t> layers;
  for (size_t layer = 0; layer < weights_.layers.size(); ++layer) {
    if (weights_.layers[layer].is_moe) layers.push_back(static_cast<int32_t>(layer));
  }
  return layers;
}

bool DeepSeekModel::holds_expert(int32_t layer, int32_t expert) const {
  if (layer < 0 || layer >= static_cast<int32_t>(weights_.layers.size())) return false;
  const std::vector<MlpWeights>& experts = weights_.layers[layer].moe.experts;
  return expert >= 0 && expert < static_cast<int32_t>(experts.size()) && experts[expert].loaded();
}

int64_t DeepSeekModel::routed_expert_bytes() const {
  for (const DecoderLayerWeights& layer : weights_.layers) {
    for (const MlpWeights& expert : layer.moe.experts) {
      if (expert.loaded()) return MlpBytes(expert);
    }
  }
  return 0;
}

absl::StatusOr<int64_t> DeepSeekModel::LoadRoutedExperts(int32_t layer,
                                                         std::span<const int32_t> experts) {
  if (layer < 0 || layer >= static_cast<int32_t>(weights_.layers.size()) ||
      !weights_.layers[layer].is_moe) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", layer, " is not a MoE layer"));
  }
  std::vector<MlpWeights>& held = weights_.layers[layer].moe.experts;
  int64_t bytes = 0;
  for (int32_t e : experts) {
    if (e < 0 || e >= static_cast<int32_t>(held.size())) {
      return absl::InvalidArgumentError(absl::StrCat("no routed expert ", e, " in layer ", layer));
    }
    if (held[e].loaded()) continue;
    XPD_ASSIGN_OR_RETURN(MlpWeights expert, LoadRoutedExpert(*checkpoint_, precision_, layer, e));
    TouchPages(expert);
    bytes += MlpBytes(expert);
    held[e] = std::move(expert);
  }
  return bytes;
}

void DeepSeekModel::ReleaseRoutedExperts(int32_t layer, std::span<const int32_t> experts) {
  if (layer < 0 || layer >= static_cast<int32_t>(weights_.layers.size())) return;
  std::vector<MlpWeights>& held = weights_.layers[layer].moe.experts;
  for (int32_t e : experts) {
    if (e >= 0 && e < static_cast<int32_t>(held.size())) held[e] = MlpWeights{};
  }
}

}  // namespace xpd::model
