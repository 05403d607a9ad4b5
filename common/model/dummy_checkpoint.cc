#include "common/model/dummy_checkpoint.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <regex>
#include <span>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/model/safetensors_writer.h"
#include "common/model/tensor_inventory.h"

namespace xpd::model {
namespace {

using kernels::DType;
namespace fs = std::filesystem;

ModelConfig CommonConfig() {
  ModelConfig c;
  c.first_k_dense_replace = 1;
  c.routed_scaling_factor = 2.5;
  c.norm_topk_prob = true;
  c.rope_theta = 10000.0;
  c.rms_norm_eps = 1e-6;
  c.max_position_embeddings = 163840;
  c.rope_scaling = RopeScaling{};  // YaRN factor 40 over 4096, betas 32/1, mscales 1
  c.n_shared_experts = 1;
  c.bos_token_id = 0;
  c.eos_token_id = 1;
  return c;
}

// ---- Deterministic values --------------------------------------------------
// A counter-based generator: element i of a tensor depends only on (seed,
// value key, i), so any slice can be produced by any thread, and the result
// is identical across platforms and standard libraries.

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ull;

inline uint64_t Mix64(uint64_t z) {  // splitmix64 finalizer
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t Fnv1a(std::string_view text) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char ch : text) h = (h ^ static_cast<uint8_t>(ch)) * 0x100000001b3ull;
  return h;
}

// Uniform on [center - half_width, center + half_width).
struct Init {
  uint64_t stream = 0;
  float center = 0.0f;
  float half_width = 0.0f;
};

Init InitFor(const TensorSpec& t, uint64_t seed) {
  // The MTP module's embedding and head hold the main model's values (spec §2.1).
  std::string key = t.name;
  if (t.mtp && t.kind == TensorKind::kEmbedding) key = "model.embed_tokens.weight";
  if (t.mtp && t.kind == TensorKind::kHead) key = "lm_head.weight";
  Init init;
  init.stream = Mix64(Fnv1a(key) ^ Mix64(seed + kGolden));
  const float kSqrt3 = std::sqrt(3.0f);  // uniform(-a, a) has std a / sqrt(3)
  switch (t.kind) {
    case TensorKind::kEmbedding:  // std 1: embeddings feed RMSNorm directly
      init.half_width = kSqrt3;
      break;
    case TensorKind::kNorm:
      init.center = 1.0f;
      init.half_width = 0.4f;
      break;
    case TensorKind::kRouterBias:
      init.half_width = 0.1f * kSqrt3;
      break;
    default:  // projections: std 1/sqrt(fan_in) keeps activations O(1)
      init.half_width = kSqrt3 / std::sqrt(static_cast<float>(t.shape.at(1)));
      break;
  }
  return init;
}

// Elements [begin, begin + out.size()) of the tensor's value sequence.
void Generate(const Init& init, int64_t begin, std::span<float> out) {
  const float scale = init.half_width * 0x1p-31f;
  int64_t i = begin;
  for (float& value : out) {
    // One 64-bit draw serves an even/odd element pair.
    const uint64_t r = Mix64(init.stream + static_cast<uint64_t>((i >> 1) + 1) * kGolden);
    const int32_t bits = static_cast<int32_t>((i & 1) ? (r >> 32) : (r & 0xffffffffu));
    value = init.center + scale * static_cast<float>(bits);
    ++i;
  }
}

void FillPlain(const TensorSpec& t, const Init& init, std::span<std::byte> out) {
  constexpr int64_t kChunk = 8192;
  std::vector<float> values(kChunk);
  const int64_t total = t.num_elements();
  for (int64_t begin = 0; begin < total; begin += kChunk) {
    const int64_t n = std::min(kChunk, total - begin);
    Generate(init, begin, std::span<float>(values.data(), n));
    if (t.dtype == DType::kF32) {
      std::memcpy(out.data() + begin * 4, values.data(), n * 4);
    } else {
      for (int64_t k = 0; k < n; ++k) {
        const uint16_t bits = kernels::F32ToBf16(values[k]);
        std::memcpy(out.data() + (begin + k) * 2, &bits, 2);
      }
    }
  }
}

// Quantizes a [rows, cols] weight in [br, bc] blocks: scale = amax/448 over the
// valid elements of each (possibly partial edge) block. Writes the FP8 codes
// and/or the scales; the weight and its scale tensor are filled separately
// (possibly on different threads), each regenerating the same values.
void QuantizeBlocks(const Init& init, int64_t rows, int64_t cols, int64_t br, int64_t bc,
                    uint8_t* codes, float* scales) {
  const int64_t col_blocks = (cols + bc - 1) / bc;
  std::vector<float> values;
  std::vector<float> block_scale(col_blocks);
  for (int64_t r0 = 0; r0 < rows; r0 += br) {
    const int64_t nr = std::min(br, rows - r0);
    values.resize(nr * cols);
    Generate(init, r0 * cols, values);
    std::fill(block_scale.begin(), block_scale.end(), 0.0f);
    for (int64_t r = 0; r < nr; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        block_scale[c / bc] = std::max(block_scale[c / bc], std::fabs(values[r * cols + c]));
      }
    }
    for (float& s : block_scale) s = s > 0.0f ? s / 448.0f : 1.0f;  // all-zero block: any scale
    if (scales != nullptr) {
      std::copy(block_scale.begin(), block_scale.end(), scales + (r0 / br) * col_blocks);
    }
    if (codes == nullptr) continue;
    for (int64_t r = 0; r < nr; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        codes[(r0 + r) * cols + c] = FastF32ToF8E4M3(values[r * cols + c] / block_scale[c / bc]);
      }
    }
  }
}

constexpr char kReadmeMarker[] = "generated by `xpd dummy-model`";

std::string ReadmeText(const ModelConfig& config, const DummyWriteOptions& options,
                       const std::vector<std::string>& files) {
  const ParameterCounts counts = CountParameters(config);
  return absl::StrCat(
      "# DUMMY DeepSeek-V3 checkpoint: random weights\n\n",
      "These are DUMMY random weights for testing and benchmarking only, ", kReadmeMarker,
      ". They carry no knowledge: the model produces meaningless tokens.\n\n",
      "- preset: ", options.preset.empty() ? "(custom config)" : options.preset, "\n",
      "- seed: ", options.seed, "\n",
      "- weights: ", options.weights_dtype == DType::kF8E4M3 ? "F8_E4M3 with block scales" : "BF16",
      "\n", "- parameters: ", counts.total, " (+ ", counts.mtp, " MTP), ", counts.active_per_token,
      " active per token\n", "- files: ", absl::StrJoin(files, ", "), "\n", "- tokenizer: ",
      options.tokenizer_dir.empty()
          ? absl::StrCat("none", options.no_tokenizer_reason.empty() ? "" : " (",
                         options.no_tokenizer_reason,
                         options.no_tokenizer_reason.empty() ? "" : ")",
                         "; prompts must be token ids")
          : "tokenizer.json and tokenizer_config.json, so text prompts work",
      "\n\n",
      "Values are uniform with std 1/sqrt(fan_in) (embeddings std 1, norm weights in "
      "[0.6, 1.4], router correction bias std 0.1), derived from (seed, tensor name) only.\n");
}

absl::Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

// Creates `dir`, or clears the weight files of an earlier dummy checkpoint in
// it. A directory holding some other checkpoint is refused rather than
// overwritten: pointing --out at real weights must not destroy them.
absl::Status PrepareDirectory(const std::string& dir) {
  static const std::regex kShard(R"(model-\d{5}-of-\d{5}\.safetensors)");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(dir, ": cannot create: ", ec.message()));
  std::vector<fs::path> stale;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name == "config.json" || name == "model.safetensors" ||
        name == "model.safetensors.index.json" || std::regex_match(name, kShard) ||
        name == "tokenizer.json" || name == "tokenizer_config.json") {
      stale.push_back(entry.path());
    }
  }
  if (ec) return absl::InternalError(absl::StrCat(dir, ": ", ec.message()));
  if (stale.empty()) return absl::OkStatus();
  std::ifstream readme(dir + "/README.md");
  const std::string text((std::istreambuf_iterator<char>(readme)),
                         std::istreambuf_iterator<char>());
  if (text.find(kReadmeMarker) == std::string::npos) {
    return absl::FailedPreconditionError(
        absl::StrCat(dir,
                     ": holds a checkpoint not written by `xpd dummy-model` (no dummy "
                     "README.md); refusing to overwrite it"));
  }
  for (const fs::path& path : stale) {
    fs::remove(path, ec);
    if (ec) return absl::InternalError(absl::StrCat(path.string(), ": ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace

uint8_t FastF32ToF8E4M3(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80);
  const uint32_t magnitude_bits = bits & 0x7fffffffu;
  if (magnitude_bits > 0x7f800000u) return 0x7f;  // NaN
  const float magnitude = std::bit_cast<float>(magnitude_bits);
  if (magnitude >= 448.0f) return sign | 0x7e;  // saturate (incl. inf)
  if (magnitude < 0x1p-6f) {
    // Subnormal range: multiples of 2^-9; rounding up to 8 gives 0x08 = 2^-6.
    return sign | static_cast<uint8_t>(std::nearbyint(magnitude * 512.0f));
  }
  // Round the float mantissa to 3 bits, nearest-even; a carry bumps the exponent.
  uint32_t rounded = magnitude_bits + 0x7ffffu + ((magnitude_bits >> 20) & 1u);
  const uint32_t exponent = (rounded >> 23) - 127 + 7;
  const uint32_t code = (exponent << 3) | ((rounded >> 20) & 7u);
  return sign | static_cast<uint8_t>(std::min<uint32_t>(code, 0x7e));
}

std::vector<std::string> DummyPresetNames() { return {"default", "small", "deepseek-v3"}; }

absl::StatusOr<ModelConfig> DummyPresetConfig(std::string_view preset) {
  ModelConfig c = CommonConfig();
  if (preset == "default") {
    c.vocab_size = 129280;
    c.hidden_size = 256;
    c.intermediate_size = 768;
    c.moe_intermediate_size = 128;
    c.num_hidden_layers = 4;
    c.num_nextn_predict_layers = 1;
    c.num_attention_heads = 8;
    c.q_lora_rank = 128;
    c.kv_lora_rank = 128;
    c.qk_nope_head_dim = 32;
    c.qk_rope_head_dim = 16;
    c.v_head_dim = 32;
    c.n_routed_experts = 16;
    c.num_experts_per_tok = 4;
    c.n_group = 4;
    c.topk_group = 2;
  } else if (preset == "small") {
    c.vocab_size = 8192;
    c.hidden_size = 1024;
    c.intermediate_size = 2816;
    c.moe_intermediate_size = 512;
    c.num_hidden_layers = 12;
    c.num_nextn_predict_layers = 0;
    c.num_attention_heads = 16;
    c.q_lora_rank = 384;
    c.kv_lora_rank = 256;
    c.qk_nope_head_dim = 64;
    c.qk_rope_head_dim = 32;
    c.v_head_dim = 64;
    c.n_routed_experts = 64;
    c.num_experts_per_tok = 6;
    c.n_group = 8;
    c.topk_group = 4;
  } else if (preset == "deepseek-v3") {  // spec §1
    c.vocab_size = 129280;
    c.hidden_size = 7168;
    c.intermediate_size = 18432;
    c.moe_intermediate_size = 2048;
    c.num_hidden_layers = 61;
    c.first_k_dense_replace = 3;
    c.num_nextn_predict_layers = 1;
    c.num_attention_heads = 128;
    c.q_lora_rank = 1536;
    c.kv_lora_rank = 512;
    c.qk_nope_head_dim = 128;
    c.qk_rope_head_dim = 64;
    c.v_head_dim = 128;
    c.n_routed_experts = 256;
    c.num_experts_per_tok = 8;
    c.n_group = 8;
    c.topk_group = 4;
    c.quantization = Fp8Quantization{};
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown preset '", std::string(preset),
                                                   "' (expected ",
                                                   absl::StrJoin(DummyPresetNames(), ", "), ")"));
  }
  return c;
}

absl::Status WriteDummyCheckpoint(const ModelConfig& config_in, const std::string& dir,
                                  const DummyWriteOptions& options) {
  if (options.weights_dtype != DType::kBF16 && options.weights_dtype != DType::kF8E4M3) {
    return absl::InvalidArgumentError("dummy weights must be BF16 or F8_E4M3");
  }
  const bool fp8 = options.weights_dtype == DType::kF8E4M3;
  ModelConfig config = config_in;
  if (fp8 && !config.quantization) config.quantization = Fp8Quantization{};
  if (!fp8) config.quantization.reset();
  nlohmann::json config_json = ModelConfigToJson(config);
  // Refuse configs the loader would refuse, before writing gigabytes.
  if (absl::StatusOr<ModelConfig> check = ParseModelConfig(config_json); !check.ok()) {
    return check.status();
  }
  config_json["architectures"] = {"DeepseekV3ForCausalLM"};
  config_json["torch_dtype"] = "bfloat16";

  const std::vector<TensorSpec> inventory = CheckpointInventory(config, fp8);
  // Shards are contiguous runs of the model-ordered inventory, balanced by
  // bytes; a weight and its scale form one unit that is never split.
  std::vector<size_t> unit_start;  // inventory index of each unit's first tensor
  for (size_t i = 0; i < inventory.size(); ++i) {
    if (!inventory[i].is_scale) unit_start.push_back(i);
  }
  const int num_shards = options.num_shards;
  if (num_shards < 1 || static_cast<size_t>(num_shards) > unit_start.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_shards (", num_shards, ") must be between 1 and ", unit_start.size()));
  }
  // Read before PrepareDirectory, which may remove the files when
  // tokenizer_dir is `dir` itself.
  std::vector<std::pair<std::string, std::string>> tokenizer_files;
  if (!options.tokenizer_dir.empty()) {
    for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) {
      const std::string path = (fs::path(options.tokenizer_dir) / name).string();
      std::ifstream in(path, std::ios::binary);
      if (!in.is_open()) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
      std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read failed"));
      tokenizer_files.emplace_back(name, std::move(text));
    }
  }
  if (absl::Status s = PrepareDirectory(dir); !s.ok()) return s;

  int64_t total_bytes = 0;
  for (const TensorSpec& t : inventory) total_bytes += t.size_bytes();
  std::vector<int> shard_of(inventory.size());
  int shard = 0;
  int64_t cumulative = 0;
  for (size_t u = 0; u < unit_start.size(); ++u) {
    const size_t end = u + 1 < unit_start.size() ? unit_start[u + 1] : inventory.size();
    for (size_t i = unit_start[u]; i < end; ++i) {
      shard_of[i] = shard;
      cumulative += inventory[i].size_bytes();
    }
    // Advance at the byte boundary, or when each later shard needs one of the
    // remaining units.
    const size_t units_left = unit_start.size() - u - 1;
    if (shard < num_shards - 1 && (cumulative * num_shards >= total_bytes * (shard + 1) ||
                                   units_left == static_cast<size_t>(num_shards - 1 - shard))) {
      ++shard;
    }
  }

  std::map<std::string, size_t> index_of;
  for (size_t i = 0; i < inventory.size(); ++i) index_of[inventory[i].name] = i;
  const int threads = options.num_threads > 0 ? options.num_threads
                                              : std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::string> files;
  std::map<std::string, std::string> weight_map;
  int64_t written_before = 0;
  for (int s = 0; s < num_shards; ++s) {
    const std::string file = num_shards == 1 ? "model.safetensors" : ShardFileName(s, num_shards);
    SafetensorsWriter writer;
    writer.SetMetadata("xpd_dummy", "random weights; see README.md");
    for (size_t i = 0; i < inventory.size(); ++i) {
      if (shard_of[i] != s) continue;
      const TensorSpec& t = inventory[i];
      SafetensorsWriter::FillFn fill;
      if (t.is_scale || t.dtype == DType::kF8E4M3) {
        const TensorSpec& w = t.is_scale ? inventory[index_of.at(t.scaled_weight)] : t;
        const int64_t br = config.quantization->block_rows, bc = config.quantization->block_cols;
        const Init init = InitFor(w, options.seed);
        const int64_t rows = w.shape[0], cols = w.shape[1];
        const bool is_scale = t.is_scale;
        fill = [=](std::span<std::byte> out) {
          auto* data = reinterpret_cast<uint8_t*>(out.data());
          QuantizeBlocks(init, rows, cols, br, bc, is_scale ? nullptr : data,
                         is_scale ? reinterpret_cast<float*>(data) : nullptr);
        };
      } else {
        const Init init = InitFor(t, options.seed);
        fill = [t, init](std::span<std::byte> out) { FillPlain(t, init, out); };
      }
      if (absl::Status st = writer.Add(t.name, t.dtype, t.shape, std::move(fill)); !st.ok()) {
        return st;
      }
      weight_map[t.name] = file;
    }
    SafetensorsWriter::ProgressFn progress;
    if (options.progress) {
      progress = [&](int64_t done, int64_t) {
        options.progress(written_before + done, total_bytes);
      };
    }
    if (absl::Status st = writer.Write(absl::StrCat(dir, "/", file), threads, progress); !st.ok()) {
      return st;
    }
    written_before += writer.data_bytes();
    files.push_back(file);
  }
  if (num_shards > 1) {
    const std::string index = "model.safetensors.index.json";
    if (absl::Status st =
            WriteSafetensorsIndex(absl::StrCat(dir, "/", index), weight_map, total_bytes);
        !st.ok()) {
      return st;
    }
    files.push_back(index);
  }
  for (const auto& [name, text] : tokenizer_files) {
    if (absl::Status st = WriteText(absl::StrCat(dir, "/", name), text); !st.ok()) return st;
    files.push_back(name);
  }
  // config.json last: a directory with a config.json is a complete checkpoint.
  if (absl::Status st =
          WriteText(absl::StrCat(dir, "/README.md"), ReadmeText(config, options, files));
      !st.ok()) {
    return st;
  }
  return WriteText(absl::StrCat(dir, "/config.json"), config_json.dump(2) + "\n");
}

}  // namespace xpd::model
