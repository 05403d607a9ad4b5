#include "common/model/deepseek_model.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/model/decoder_layer.h"
#include "common/model/rope_frequencies.h"

namespace xpd::model {
namespace {

void EmbedRow(const kernels::WeightMatrix& embed, int32_t token, float* out) {
  for (int64_t i = 0; i < embed.cols; ++i) out[i] = embed.At(token, i);
}

// Flattens the batch into rows and checks every token and block table.
absl::Status LayOutBatch(const ModelConfig& config, const kernels::PagedLatentCache& cache,
                         const ForwardBatch& batch, std::vector<SequenceRows>* sequences,
                         std::vector<int64_t>* positions) {
  int64_t row = 0;
  for (size_t s = 0; s < batch.sequences.size(); ++s) {
    const SequenceStep& step = batch.sequences[s];
    const int64_t end = step.start + static_cast<int64_t>(step.tokens.size());
    if (step.tokens.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s, ": no tokens"));
    }
    if (step.start < 0 || end > config.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s, ": positions [", step.start,
                                                     ", ", end, ") exceed max_position_embeddings ",
                                                     config.max_position_embeddings));
    }
    if (static_cast<int64_t>(step.block_table.size()) * cache.block_size < end) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s, ": block table of ",
                                                     step.block_table.size(),
                                                     " blocks cannot hold ", end, " positions"));
    }
    for (size_t i = 0; i < step.tokens.size(); ++i) {
      if (step.tokens[i] < 0 || step.tokens[i] >= config.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("sequence ", s, ": token id ",
                                                       step.tokens[i], " outside vocabulary [0, ",
                                                       config.vocab_size, ")"));
      }
      positions->push_back(step.start + static_cast<int64_t>(i));
    }
    sequences->push_back({.first_row = row,
                          .num_rows = static_cast<int32_t>(step.tokens.size()),
                          .start = step.start,
                          .block_table = step.block_table});
    row += static_cast<int64_t>(step.tokens.size());
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<DeepSeekModel>> DeepSeekModel::Load(const Checkpoint& checkpoint,
                                                                   const LoadOptions& options,
                                                                   kernels::Backend* backend) {
  if (backend == nullptr) return absl::InvalidArgumentError("DeepSeekModel::Load: no backend");
  auto model = std::unique_ptr<DeepSeekModel>(new DeepSeekModel());
  model->checkpoint_ = &checkpoint;
  model->config_ = checkpoint.config();
  model->precision_ = options.precision;
  model->backend_ = backend;
  model->exchange_ = &model->local_exchange_;
  model->inv_freq_ = RopeInverseFrequencies(model->config_);
  XPD_ASSIGN_OR_RETURN(model->weights_, LoadModelWeights(checkpoint, options));
  return model;
}

int32_t DeepSeekModel::cache_layers() const {
  return static_cast<int32_t>(config_.num_hidden_layers + weights_.mtp.size());
}

absl::Status DeepSeekModel::Forward(const ForwardBatch& batch,
                                    const kernels::PagedLatentCache& cache,
                                    ForwardOutput* output) const {
  if (cache.num_layers < config_.num_hidden_layers || cache.latent_dim != config_.latent_dim()) {
    return absl::InvalidArgumentError("Forward: KV cache does not match the model");
  }
  std::vector<SequenceRows> sequences;
  std::vector<int64_t> positions;
  XPD_RETURN_IF_ERROR(LayOutBatch(config_, cache, batch, &sequences, &positions));
  const int64_t rows = static_cast<int64_t>(positions.size()), d = config_.hidden_size;

  std::vector<float> h(rows * d);
  for (const SequenceRows& seq : sequences) {
    const SequenceStep& step = batch.sequences[&seq - sequences.data()];
    for (int32_t i = 0; i < seq.num_rows; ++i) {
      EmbedRow(weights_.embed, step.tokens[i], &h[(seq.first_row + i) * d]);
    }
  }
  ForwardScratch scratch;
  const LayerContext context{.config = config_,
                             .backend = *backend_,
                             .precision = precision_,
                             .inv_freq = inv_freq_,
                             .cache = cache,
                             .sequences = sequences,
                             .positions = positions,
                             .rows = rows,
                             .attention = batch.attention,
                             .routing = output->routing,
                             .exchange = *exchange_,
                             .scratch = scratch};
  for (size_t layer = 0; layer < weights_.layers.size(); ++layer) {
    XPD_RETURN_IF_ERROR(
        RunDecoderLayer(context, weights_.layers[layer], static_cast<int32_t>(layer), h.data()));
  }

  // Final norm and head for the rows each sequence asked for.
  std::vector<int64_t> out_rows;
  output->first_row.clear();
  for (size_t s = 0; s < sequences.size(); ++s) {
    output->first_row.push_back(static_cast<int64_t>(out_rows.size()));
    const LogitsRows want = batch.sequences[s].logits;
    if (want == LogitsRows::kNone) continue;
    const int64_t first = want == LogitsRows::kAll ? 0 : sequences[s].num_rows - 1;
    for (int64_t i = first; i < sequences[s].num_rows; ++i) {
      out_rows.push_back(sequences[s].first_row + i);
    }
  }
  const int64_t n_out = static_cast<int64_t>(out_rows.size());
  output->num_rows = n_out;
  output->hidden.assign(n_out * d, 0.0f);
  output->logits.assign(n_out * config_.vocab_size, 0.0f);
  if (n_out == 0) return absl::OkStatus();
  for (int64_t i = 0; i < n_out; ++i) {
    std::memcpy(&output->hidden[i * d], &h[out_rows[i] * d], sizeof(float) * d);
  }
  const float eps = static_cast<float>(config_.rms_norm_eps);
  XPD_RETURN_IF_ERROR(backend_->RmsNorm({.x = output->hidden.data(),
                                         .weight = weights_.final_norm.data(),
                                         .y = output->hidden.data(),
                                         .rows = n_out,
                                         .dim = d,
                                         .eps = eps}));
  return Project(context, weights_.lm_head.matrix, output->hidden.data(), d, output->logits.data(),
                 0, n_out);
}

absl::Status DeepSeekModel::ForwardMtp(std::span<const MtpSequence> mtp_sequences,
                                       const kernels::PagedLatentCache& cache,
                                       std::vector<float>* logits, RoutingTrace* routing) const {
  if (weights_.mtp.empty()) {
    return absl::FailedPreconditionError("the model has no MTP module loaded");
  }
  if (cache.num_layers < cache_layers() || cache.latent_dim != config_.latent_dim()) {
    return absl::InvalidArgumentError("ForwardMtp: KV cache has no MTP layer");
  }
  const MtpWeights& mtp = weights_.mtp[0];
  ForwardBatch batch;
  for (const MtpSequence& s : mtp_sequences) {
    batch.sequences.push_back(
        {.tokens = s.next_tokens, .start = s.start, .block_table = s.block_table});
  }
  std::vector<SequenceRows> sequences;
  std::vector<int64_t> positions;
  XPD_RETURN_IF_ERROR(LayOutBatch(config_, cache, batch, &sequences, &positions));
  const int64_t rows = static_cast<int64_t>(positions.size()), d = config_.hidden_size;
  const float eps = static_cast<float>(config_.rms_norm_eps);

  // z = [enorm(embed(t_{i+1})) | hnorm(h_i)]  (embedding first, spec §4.2)
  std::vector<float> z(rows * 2 * d), embedded(rows * d), hidden(rows * d);
  for (size_t s = 0; s < mtp_sequences.size(); ++s) {
    for (int32_t i = 0; i < sequences[s].num_rows; ++i) {
      const int64_t row = sequences[s].first_row + i;
      EmbedRow(mtp.embed, mtp_sequences[s].next_tokens[i], &embedded[row * d]);
      std::memcpy(&hidden[row * d], mtp_sequences[s].hidden + i * d, sizeof(float) * d);
    }
  }
  XPD_RETURN_IF_ERROR(backend_->RmsNorm({.x = embedded.data(),
                                         .weight = mtp.enorm.data(),
                                         .y = z.data(),
                                         .y_stride = 2 * d,
                                         .rows = rows,
                                         .dim = d,
                                         .eps = eps}));
  XPD_RETURN_IF_ERROR(backend_->RmsNorm({.x = hidden.data(),
                                         .weight = mtp.hnorm.data(),
                                         .y = z.data() + d,
                                         .y_stride = 2 * d,
                                         .rows = rows,
                                         .dim = d,
                                         .eps = eps}));
  ForwardScratch scratch;
  const LayerContext context{.config = config_,
                             .backend = *backend_,
                             .precision = precision_,
                             .inv_freq = inv_freq_,
                             .cache = cache,
                             .sequences = sequences,
                             .positions = positions,
                             .rows = rows,
                             .attention = AttentionForm::kAuto,
                             .routing = routing,
                             .exchange = *exchange_,
                             .scratch = scratch};
  std::vector<float> x(rows * d);
  XPD_RETURN_IF_ERROR(Project(context, mtp.eh_proj.matrix, z.data(), 2 * d, x.data(), d, rows));
  XPD_RETURN_IF_ERROR(RunDecoderLayer(context, mtp.block,
                                      static_cast<int32_t>(config_.num_hidden_layers), x.data()));
  XPD_RETURN_IF_ERROR(backend_->RmsNorm({.x = x.data(),
                                         .weight = mtp.head_norm.data(),
                                         .y = x.data(),
                                         .rows = rows,
                                         .dim = d,
                                         .eps = eps}));
  logits->assign(rows * config_.vocab_size, 0.0f);
  return Project(context, mtp.head.matrix, x.data(), d, logits->data(), 0, rows);
}

}  // namespace xpd::model
