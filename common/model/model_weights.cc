#include "common/model/model_weights.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "kernels/core/thread_pool.h"
#include "kernels/matmul/weight_packing.h"

namespace xpd::model {
namespace {

using kernels::DType;
using kernels::Precision;
using kernels::WeightMatrix;

constexpr DType kFloatTypes[] = {DType::kBF16, DType::kF32};
constexpr DType kLinearTypes[] = {DType::kBF16, DType::kF32, DType::kF8E4M3};

// Drops the mmap'ed pages of a tensor that was copied (packed) from this
// process's resident memory, so loading does not hold the weights twice. The
// mapping stays valid: a later read faults the pages back in from the file.
void ReleaseMappedPages(const void* data, int64_t bytes) {
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = (reinterpret_cast<uintptr_t>(data) + page - 1) / page * page;
  const auto end = (reinterpret_cast<uintptr_t>(data) + bytes) / page * page;
  // Advice only: on failure the pages simply stay resident.
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

// Shared by every tensor of one checkpoint.
struct Loader {
  const Checkpoint& checkpoint;
  const ModelConfig& config;
  Precision precision;
  kernels::ThreadPool* pool = nullptr;  // loads a layer's experts side by side

  absl::StatusOr<std::vector<float>> Vector(const std::string& name, int64_t size) const {
    const int64_t shape[] = {size};
    XPD_ASSIGN_OR_RETURN(TensorView view, checkpoint.Get(name, kFloatTypes, shape));
    std::vector<float> values(size);
    for (int64_t i = 0; i < size; ++i) {
      if (view.dtype == DType::kF32) {
        std::memcpy(&values[i], view.data + 4 * i, 4);
      } else {
        uint16_t bits;
        std::memcpy(&bits, view.data + 2 * i, 2);
        values[i] = kernels::Bf16ToF32(bits);
      }
    }
    return values;
  }

  absl::StatusOr<WeightMatrix> Matrix(const std::string& name, int64_t rows, int64_t cols,
                                      std::span<const DType> dtypes) const {
    const int64_t shape[] = {rows, cols};
    XPD_ASSIGN_OR_RETURN(TensorView view, checkpoint.Get(name, dtypes, shape));
    WeightMatrix matrix{.dtype = view.dtype, .data = view.data, .rows = rows, .cols = cols};
    if (view.dtype == DType::kF8E4M3) {
      const int32_t block_rows = config.quantization ? config.quantization->block_rows : 128;
      const int32_t block_cols = config.quantization ? config.quantization->block_cols : 128;
      const std::string scale_name = name + "_scale_inv";
      const int64_t scale_shape[] = {(rows + block_rows - 1) / block_rows,
                                     (cols + block_cols - 1) / block_cols};
      const DType scale_types[] = {DType::kF32};
      XPD_ASSIGN_OR_RETURN(TensorView scales, checkpoint.Get(scale_name, scale_types, scale_shape));
      matrix.block_scales = reinterpret_cast<const float*>(scales.data);
      matrix.block_rows = block_rows;
      matrix.block_cols = block_cols;
    }
    return matrix;
  }

  // A projection `prefix.weight` (+ scales), converted to what `precision`
  // computes with. BF16 results are packed for the matmul kernels (see
  // kernels/matmul/weight_packing.h).
  absl::StatusOr<Linear> Projection(const std::string& prefix, int64_t rows, int64_t cols) const {
    XPD_ASSIGN_OR_RETURN(WeightMatrix matrix, Matrix(prefix + ".weight", rows, cols, kLinearTypes));
    if (precision == Precision::kBF16 && matrix.dtype == DType::kF32) {
      const Linear converted =
          Derived(rows, cols, [&](int64_t r, int64_t c) { return matrix.At(r, c); });
      ReleaseMappedPages(matrix.data, rows * cols * kernels::DTypeSize(matrix.dtype));
      return Packed(converted.matrix, prefix);
    }
    // BF16 and FP8 as stored (FP8 keeps its one byte per weight: decode
    // streams half the bytes of BF16), packed for the kernels.
    if (matrix.dtype != DType::kF32) {
      XPD_ASSIGN_OR_RETURN(Linear packed, Packed(matrix, prefix));
      ReleaseMappedPages(matrix.data, rows * cols * kernels::DTypeSize(matrix.dtype));
      return packed;
    }
    Linear linear;
    linear.matrix = matrix;
    return linear;
  }

  absl::StatusOr<Linear> Packed(const WeightMatrix& matrix, const std::string& prefix) const {
    absl::StatusOr<kernels::PackedWeight> packed = kernels::PackTiles(matrix);
    if (!packed.ok()) {
      // Named like the checkpoint's own errors: file, tensor, reason.
      const std::string name = prefix + ".weight";
      absl::StatusOr<TensorView> view = checkpoint.GetAny(name);
      return absl::Status(packed.status().code(),
                          absl::StrCat(view.ok() ? view->file : checkpoint.dir(), ": tensor '",
                                       name, "': ", packed.status().message()));
    }
    return Linear{.matrix = packed->matrix, .storage = std::move(packed->storage)};
  }

  // An owned matrix whose values come from `value(row, col)`, stored as F32 for
  // f32 compute and BF16 for BF16 compute.
  template <typename Fn>
  Linear Derived(int64_t rows, int64_t cols, Fn value) const {
    Linear linear;
    linear.matrix.rows = rows;
    linear.matrix.cols = cols;
    if (precision == Precision::kBF16) {
      auto storage = std::shared_ptr<uint16_t[]>(new uint16_t[rows * cols]);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) storage[r * cols + c] = kernels::F32ToBf16(value(r, c));
      }
      linear.matrix.dtype = DType::kBF16;
      linear.matrix.data = storage.get();
      linear.storage = std::shared_ptr<const void>(storage, storage.get());
    } else {
      auto storage = std::shared_ptr<float[]>(new float[rows * cols]);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) storage[r * cols + c] = value(r, c);
      }
      linear.matrix.dtype = DType::kF32;
      linear.matrix.data = storage.get();
      linear.storage = std::shared_ptr<const void>(storage, storage.get());
    }
    return linear;
  }

  absl::StatusOr<MlpWeights> Mlp(const std::string& prefix, int64_t width) const {
    const int64_t d = config.hidden_size;
    MlpWeights mlp;
    XPD_ASSIGN_OR_RETURN(mlp.gate, Projection(prefix + ".gate_proj", width, d));
    XPD_ASSIGN_OR_RETURN(mlp.up, Projection(prefix + ".up_proj", width, d));
    XPD_ASSIGN_OR_RETURN(mlp.down, Projection(prefix + ".down_proj", d, width));
    return mlp;
  }

  absl::StatusOr<AttentionWeights> Attention(const std::string& prefix) const {
    const ModelConfig& c = config;
    const int64_t heads = c.num_attention_heads, nope = c.qk_nope_head_dim, v = c.v_head_dim;
    const int64_t rank = c.kv_lora_rank;
    AttentionWeights a;
    XPD_ASSIGN_OR_RETURN(a.q_a, Projection(prefix + "q_a_proj", c.q_lora_rank, c.hidden_size));
    XPD_ASSIGN_OR_RETURN(a.q_a_norm, Vector(prefix + "q_a_layernorm.weight", c.q_lora_rank));
    XPD_ASSIGN_OR_RETURN(a.q_b,
                         Projection(prefix + "q_b_proj", heads * c.qk_head_dim(), c.q_lora_rank));
    XPD_ASSIGN_OR_RETURN(a.kv_a,
                         Projection(prefix + "kv_a_proj_with_mqa", c.latent_dim(), c.hidden_size));
    XPD_ASSIGN_OR_RETURN(a.kv_a_norm, Vector(prefix + "kv_a_layernorm.weight", rank));
    // kv_b keeps its stored form for the MHA path (f32 compute reads FP8 exactly).
    XPD_ASSIGN_OR_RETURN(a.kv_b, Projection(prefix + "kv_b_proj", heads * (nope + v), rank));
    XPD_ASSIGN_OR_RETURN(a.o, Projection(prefix + "o_proj", c.hidden_size, heads * v));
    XPD_ASSIGN_OR_RETURN(WeightMatrix kv_b, Matrix(prefix + "kv_b_proj.weight", heads * (nope + v),
                                                   rank, kLinearTypes));
    a.uk_t = Derived(heads * rank, nope, [&](int64_t r, int64_t col) {
      const int64_t h = r / rank, latent = r % rank;
      return kv_b.At(h * (nope + v) + col, latent);
    });
    a.uv = Derived(heads * v, rank, [&](int64_t r, int64_t latent) {
      const int64_t h = r / v, d = r % v;
      return kv_b.At(h * (nope + v) + nope + d, latent);
    });
    // Packed like the projections when each head's rows start a tile (the
    // latent form multiplies head by head): decode reads them every token.
    if (rank % kernels::kPackedTileRows == 0) {
      XPD_ASSIGN_OR_RETURN(a.uk_t, Packed(a.uk_t.matrix, prefix + "kv_b_proj"));
    }
    if (v % kernels::kPackedTileRows == 0) {
      XPD_ASSIGN_OR_RETURN(a.uv, Packed(a.uv.matrix, prefix + "kv_b_proj"));
    }
    return a;
  }

  absl::StatusOr<DecoderLayerWeights> Layer(int64_t layer, const LoadOptions& options) const {
    const std::string prefix = absl::StrCat("model.layers.", layer, ".");
    const int64_t d = config.hidden_size;
    DecoderLayerWeights w;
    XPD_ASSIGN_OR_RETURN(w.attention, Attention(prefix + "self_attn."));
    XPD_ASSIGN_OR_RETURN(w.attention.input_norm, Vector(prefix + "input_layernorm.weight", d));
    XPD_ASSIGN_OR_RETURN(w.post_attention_norm,
                         Vector(prefix + "post_attention_layernorm.weight", d));
    // The MTP layers sit after the main stack and are always MoE (spec §2.1).
    w.is_moe = layer >= config.num_hidden_layers || config.IsMoeLayer(layer);
    if (!w.is_moe) {
      XPD_ASSIGN_OR_RETURN(w.dense, Mlp(prefix + "mlp", config.intermediate_size));
      return w;
    }
    const int64_t experts = config.n_routed_experts;
    XPD_ASSIGN_OR_RETURN(w.moe.router.matrix,
                         Matrix(prefix + "mlp.gate.weight", experts, d, kFloatTypes));
    XPD_ASSIGN_OR_RETURN(w.moe.correction_bias,
                         Vector(prefix + "mlp.gate.e_score_correction_bias", experts));
    w.moe.experts.resize(experts);
    std::vector<absl::Status> status(experts);
    auto load = [&](int64_t begin, int64_t end) {
      for (int64_t e = begin; e < end; ++e) {
        if (options.hold_expert && !options.hold_expert(layer, e)) continue;
        absl::StatusOr<MlpWeights> mlp =
            Mlp(absl::StrCat(prefix, "mlp.experts.", e), config.moe_intermediate_size);
        if (mlp.ok()) {
          w.moe.experts[e] = *std::move(mlp);
        } else {
          status[e] = mlp.status();
        }
      }
    };
    if (pool != nullptr) {
      pool->ParallelForDynamic(experts, 1, load);
    } else {
      load(0, experts);
    }
    for (const absl::Status& s : status) XPD_RETURN_IF_ERROR(s);  // the lowest expert's error
    if (config.n_shared_experts > 0) {
      XPD_ASSIGN_OR_RETURN(w.moe.shared,
                           Mlp(prefix + "mlp.shared_experts",
                               config.n_shared_experts * config.moe_intermediate_size));
    }
    return w;
  }

  absl::StatusOr<MtpWeights> Mtp(int64_t layer, const LoadOptions& options,
                                 const ModelWeights& main) const {
    const std::string prefix = absl::StrCat("model.layers.", layer, ".");
    const int64_t d = config.hidden_size, vocab = config.vocab_size;
    MtpWeights m;
    XPD_ASSIGN_OR_RETURN(m.enorm, Vector(prefix + "enorm.weight", d));
    XPD_ASSIGN_OR_RETURN(m.hnorm, Vector(prefix + "hnorm.weight", d));
    XPD_ASSIGN_OR_RETURN(m.eh_proj, Projection(prefix + "eh_proj", d, 2 * d));
    XPD_ASSIGN_OR_RETURN(m.block, Layer(layer, options));
    XPD_ASSIGN_OR_RETURN(m.head_norm, Vector(prefix + "shared_head.norm.weight", d));
    // Embedding and head are shared with the main model (spec §4.1); checkpoints
    // that drop the copies under the MTP layer use the main ones.
    m.embed = main.embed;
    if (checkpoint.Has(prefix + "embed_tokens.weight")) {
      XPD_ASSIGN_OR_RETURN(m.embed, Matrix(prefix + "embed_tokens.weight", vocab, d, kFloatTypes));
    }
    m.head = main.lm_head;
    if (checkpoint.Has(prefix + "shared_head.head.weight")) {
      XPD_ASSIGN_OR_RETURN(m.head, Projection(prefix + "shared_head.head", vocab, d));
    }
    return m;
  }
};

}  // namespace

absl::StatusOr<ModelWeights> LoadModelWeights(const Checkpoint& checkpoint,
                                              const LoadOptions& options) {
  const ModelConfig& config = checkpoint.config();
  const int threads = options.load_threads > 0
                          ? options.load_threads
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  kernels::ThreadPool pool(threads);
  const Loader loader{checkpoint, config, options.precision, &pool};
  const int64_t d = config.hidden_size, vocab = config.vocab_size;
  const int64_t total_layers =
      config.num_hidden_layers + (options.load_mtp ? config.num_nextn_predict_layers : 0);
  ModelWeights weights;
  XPD_ASSIGN_OR_RETURN(weights.embed,
                       loader.Matrix("model.embed_tokens.weight", vocab, d, kFloatTypes));
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    XPD_ASSIGN_OR_RETURN(DecoderLayerWeights w, loader.Layer(layer, options));
    weights.layers.push_back(std::move(w));
    if (options.progress) options.progress(layer + 1, total_layers);
  }
  XPD_ASSIGN_OR_RETURN(weights.final_norm, loader.Vector("model.norm.weight", d));
  XPD_ASSIGN_OR_RETURN(weights.lm_head, loader.Projection("lm_head", vocab, d));
  if (options.load_mtp) {
    for (int64_t i = 0; i < config.num_nextn_predict_layers; ++i) {
      const int64_t layer = config.num_hidden_layers + i;
      XPD_ASSIGN_OR_RETURN(MtpWeights m, loader.Mtp(layer, options, weights));
      weights.mtp.push_back(std::move(m));
      if (options.progress) options.progress(layer + 1, total_layers);
    }
  }
  return weights;
}

absl::StatusOr<MlpWeights> LoadRoutedExpert(const Checkpoint& checkpoint,
                                            kernels::Precision precision, int64_t layer,
                                            int64_t expert) {
  const ModelConfig& config = checkpoint.config();
  const bool moe = layer >= config.num_hidden_layers || config.IsMoeLayer(layer);
  if (layer < 0 || !moe || expert < 0 || expert >= config.n_routed_experts) {
    return absl::InvalidArgumentError(
        absl::StrCat("no routed expert ", expert, " in layer ", layer));
  }
  const Loader loader{checkpoint, config, precision};
  return loader.Mlp(absl::StrCat("model.layers.", layer, ".mlp.experts.", expert),
                    config.moe_intermediate_size);
}

int64_t MlpBytes(const MlpWeights& mlp) {
  int64_t bytes = 0;
  for (const Linear* l : {&mlp.gate, &mlp.up, &mlp.down}) bytes += kernels::StoredBytes(l->matrix);
  return bytes;
}

}  // namespace xpd::model
