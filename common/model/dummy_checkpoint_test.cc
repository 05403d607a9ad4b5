#include "common/model/dummy_checkpoint.h"

#include <stdlib.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/model/checkpoint.h"
#include "common/model/tensor_inventory.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace xpd::model {
namespace {

using kernels::DType;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

constexpr char kModels[] = "tests/fixtures/dsv3-tiny/models/";

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::unique_ptr<Checkpoint> MustOpen(const std::string& dir) {
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir);
  EXPECT_TRUE(ckpt.ok()) << ckpt.status();
  return ckpt.ok() ? *std::move(ckpt) : nullptr;
}

// The default preset with its sizes cut down so a test writes it in
// milliseconds; shapes deliberately not multiples of the FP8 block.
ModelConfig TinyConfig() {
  ModelConfig c = *DummyPresetConfig("default");
  c.vocab_size = 300;
  c.hidden_size = 40;
  c.intermediate_size = 72;
  c.moe_intermediate_size = 24;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 2;
  c.q_lora_rank = 24;
  c.kv_lora_rank = 20;
  c.qk_nope_head_dim = 8;
  c.qk_rope_head_dim = 4;
  c.v_head_dim = 8;
  c.n_routed_experts = 8;
  c.num_experts_per_tok = 2;
  c.n_group = 2;
  c.topk_group = 1;
  c.quantization = Fp8Quantization{16, 16, ""};
  return c;
}

class DummyCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/dummy_XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    root_ = pattern;
  }
  void TearDown() override { fs::remove_all(root_); }

  std::string Write(const ModelConfig& config, const std::string& name, DType dtype, uint64_t seed,
                    int shards = 1) {
    DummyWriteOptions options;
    options.weights_dtype = dtype;
    options.seed = seed;
    options.num_shards = shards;
    options.num_threads = 3;
    options.preset = "tiny-test";
    const std::string dir = root_ + "/" + name;
    const absl::Status status = WriteDummyCheckpoint(config, dir, options);
    EXPECT_TRUE(status.ok()) << status;
    return dir;
  }

  std::string root_;
};

// The inventory reproduces the fixtures' tensor names, shapes and dtypes exactly.
TEST(TensorInventoryTest, MatchesFixtureCheckpoints) {
  for (const std::string variant : {"bf16", "fp8", "fp8-block16"}) {
    std::unique_ptr<Checkpoint> fixture = MustOpen(kModels + variant);
    ASSERT_NE(fixture, nullptr);
    const std::vector<TensorSpec> inventory =
        CheckpointInventory(fixture->config(), variant != "bf16");
    std::vector<std::string> names;
    for (const TensorSpec& spec : inventory) {
      names.push_back(spec.name);
      absl::StatusOr<TensorView> view = fixture->Get(spec.name, {&spec.dtype, 1}, spec.shape);
      EXPECT_TRUE(view.ok()) << variant << ": " << view.status();
    }
    std::sort(names.begin(), names.end());
    EXPECT_EQ(names, fixture->TensorNames()) << variant;
  }
}

TEST(TensorInventoryTest, ParameterCounts) {
  // small: 1.18B total, 173M active (hand-computed from the preset sizes).
  ParameterCounts small = CountParameters(*DummyPresetConfig("small"));
  EXPECT_EQ(small.total, 1184990400);
  EXPECT_EQ(small.active_per_token, 173114560);
  EXPECT_EQ(small.mtp, 0);
  EXPECT_EQ(small.embedding, 8192 * 1024);
  // DeepSeek-V3: 671B main model (RW), MTP module 11.6B + its embedding and head copies.
  ParameterCounts v3 = CountParameters(*DummyPresetConfig("deepseek-v3"));
  EXPECT_EQ(v3.total, 671026419200);
  EXPECT_EQ(v3.embedding, 129280LL * 7168);
  EXPECT_EQ(v3.mtp, 11610068224 + 2 * 129280LL * 7168);
  EXPECT_EQ(v3.active_per_token, 36625618432);  // ~36.6B + 0.9B embedding = RW's 37B
}

TEST(TensorInventoryTest, DeepSeekV3MemoryPlan) {
  const ModelConfig v3 = *DummyPresetConfig("deepseek-v3");
  const MemoryPlan plan = PlanMemory(v3, /*fp8=*/true, 8, /*include_mtp=*/false);
  EXPECT_EQ(plan.experts_per_rank, 32);
  EXPECT_EQ(plan.kv_bytes_per_token, 70272);  // spec appendix B
  // One routed expert in one layer: 3 FP8 [2048, 7168] matrices plus 3 scale grids of 16x56.
  const int64_t expert_layer_bytes = 3 * 2048LL * 7168 + 3 * 16 * 56 * 4;
  EXPECT_EQ(plan.routed_expert_bytes_per_rank, expert_layer_bytes * 58 * 32);
  const MemoryPlan one = PlanMemory(v3, true, 1, false);
  EXPECT_EQ(one.replicated_bytes, plan.replicated_bytes);
  EXPECT_EQ(one.routed_expert_bytes_per_rank, expert_layer_bytes * 58 * 256);
  const MemoryPlan uneven = PlanMemory(v3, true, 3, true);
  EXPECT_EQ(uneven.experts_per_rank, 86);
  EXPECT_EQ(uneven.kv_bytes_per_token, 62 * 576 * 2);

  // Loaded by the CPU engine: every FP8 [r, c] matrix (r a multiple of 32
  // here) keeps its codes and holds one 32-float scale line per 32 rows and
  // 128 columns instead of one scale per 128x128 block.
  auto scale_growth = [](int64_t r, int64_t c) {
    const int64_t col_blocks = (c + 127) / 128;
    return r / 32 * col_blocks * 32 * 4 - (r + 127) / 128 * col_blocks * 4;
  };
  EXPECT_EQ(plan.cpu_routed_expert_bytes_per_rank,
            plan.routed_expert_bytes_per_rank +
                (2 * scale_growth(2048, 7168) + scale_growth(7168, 2048)) * 58 * 32);
  // Replicated: attention in 61 layers, dense MLPs in 3, shared experts in
  // 58, plus W_UK^T and W_UV (128 heads x 512 x (128 + 128), BF16) per layer.
  const int64_t attention = scale_growth(1536, 7168) + scale_growth(128 * 192, 1536) +
                            scale_growth(576, 7168) + scale_growth(128 * 256, 512) +
                            scale_growth(7168, 128 * 128);
  const int64_t dense = 2 * scale_growth(18432, 7168) + scale_growth(7168, 18432);
  const int64_t shared = 2 * scale_growth(2048, 7168) + scale_growth(7168, 2048);
  const int64_t absorbed = 128LL * 512 * 256 * 2;
  EXPECT_EQ(plan.cpu_replicated_bytes,
            plan.replicated_bytes + 61 * (attention + absorbed) + 3 * dense + 58 * shared);
}

TEST(DummyPresetTest, PresetsParseAndUnknownIsAnError) {
  for (const std::string& preset : DummyPresetNames()) {
    absl::StatusOr<ModelConfig> c = DummyPresetConfig(preset);
    ASSERT_TRUE(c.ok()) << preset;
    EXPECT_TRUE(ParseModelConfig(ModelConfigToJson(*c)).ok()) << preset;
  }
  const ModelConfig d = *DummyPresetConfig("default");
  EXPECT_EQ(d.vocab_size, 129280);
  EXPECT_EQ(d.num_nextn_predict_layers, 1);
  EXPECT_NEAR(d.SoftmaxScale(), std::pow(48.0, -0.5) * std::pow(0.1 * std::log(40.0) + 1, 2),
              1e-12);
  absl::StatusOr<ModelConfig> bad = DummyPresetConfig("huge");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("unknown preset 'huge'"));
}

TEST(DummyPresetTest, FastFp8MatchesReferenceEncoder) {
  std::mt19937 rng(1);  // inputs only; the encoders are what is compared
  std::vector<float> inputs = {0.0f,
                               -0.0f,
                               448.0f,
                               -448.0f,
                               449.0f,
                               464.0f,
                               1e9f,
                               0x1p-6f,
                               0x1p-9f,
                               0x1p-10f,
                               0x1.8p-10f,
                               0x1.7p-10f,
                               0x1.1p-6f,
                               15.5f,
                               17.0f,
                               0x1.fp-7f,
                               std::numeric_limits<float>::infinity()};
  for (uint32_t bits = 0x30000000; bits < 0x43f00000; bits += 4099) {
    inputs.push_back(std::bit_cast<float>(bits));
  }
  std::uniform_real_distribution<float> dist(-500.0f, 500.0f);
  for (int i = 0; i < 20000; ++i) inputs.push_back(dist(rng));
  for (float x : inputs) {
    ASSERT_EQ(FastF32ToF8E4M3(x), kernels::F32ToF8E4M3(x)) << x;
    ASSERT_EQ(FastF32ToF8E4M3(-x), kernels::F32ToF8E4M3(-x)) << -x;
  }
}

TEST_F(DummyCheckpointTest, Bf16HasEveryTensorAndSaneValues) {
  const ModelConfig config = TinyConfig();
  const std::string dir = Write(config, "bf16", DType::kBF16, 7);
  std::unique_ptr<Checkpoint> ckpt = MustOpen(dir);
  ASSERT_NE(ckpt, nullptr);
  EXPECT_FALSE(ckpt->config().quantization.has_value());  // BF16 output drops it
  const std::vector<TensorSpec> inventory = CheckpointInventory(config, false);
  EXPECT_EQ(ckpt->TensorNames().size(), inventory.size());
  for (const TensorSpec& spec : inventory) {
    absl::StatusOr<TensorView> view = ckpt->Get(spec.name, {&spec.dtype, 1}, spec.shape);
    ASSERT_TRUE(view.ok()) << view.status();
    // Check the value distribution of each kind.
    double sum = 0, sum_sq = 0, lo = 1e30, hi = -1e30;
    for (int64_t i = 0; i < view->num_elements(); ++i) {
      float v;
      if (view->dtype == DType::kF32) {
        std::memcpy(&v, view->data + 4 * i, 4);
      } else {
        uint16_t b;
        std::memcpy(&b, view->data + 2 * i, 2);
        v = kernels::Bf16ToF32(b);
      }
      sum += v;
      sum_sq += v * v;
      lo = std::min<double>(lo, v);
      hi = std::max<double>(hi, v);
    }
    const double n = view->num_elements();
    const double mean = sum / n, std = std::sqrt(sum_sq / n - mean * mean);
    if (spec.kind == TensorKind::kNorm) {
      EXPECT_GE(lo, 0.6 - 1e-6) << spec.name;
      EXPECT_LE(hi, 1.4 + 1e-6) << spec.name;
      EXPECT_GT(hi - lo, 0.2) << spec.name;
    } else if (spec.kind == TensorKind::kRouterBias) {
      EXPECT_LT(std, 0.2) << spec.name;
      EXPECT_GT(std, 0.03) << spec.name;
    } else if (n >= 500) {
      const double want =
          spec.kind == TensorKind::kEmbedding ? 1.0 : 1.0 / std::sqrt(spec.shape[1]);
      EXPECT_NEAR(std, want, 0.1 * want) << spec.name;
      EXPECT_NEAR(mean, 0.0, 0.1 * want) << spec.name;
    }
  }
  // The MTP module's embedding and head repeat the main model's.
  auto bytes = [&](const std::string& name) {
    TensorView v = *ckpt->GetAny(name);
    return std::string(reinterpret_cast<const char*>(v.data), v.size_bytes);
  };
  EXPECT_EQ(bytes("model.layers.3.embed_tokens.weight"), bytes("model.embed_tokens.weight"));
  EXPECT_EQ(bytes("model.layers.3.shared_head.head.weight"), bytes("lm_head.weight"));
  EXPECT_NE(bytes("model.layers.1.mlp.experts.0.up_proj.weight"),
            bytes("model.layers.1.mlp.experts.1.up_proj.weight"));

  const std::string readme = ReadBytes(dir + "/README.md");
  EXPECT_THAT(readme, HasSubstr("DUMMY random weights"));
  EXPECT_THAT(readme, HasSubstr("xpd dummy-model"));
  EXPECT_THAT(readme, HasSubstr("seed: 7"));
  EXPECT_THAT(readme, HasSubstr("preset: tiny-test"));
  const nlohmann::json config_json = nlohmann::json::parse(ReadBytes(dir + "/config.json"));
  EXPECT_EQ(config_json["architectures"], nlohmann::json({"DeepseekV3ForCausalLM"}));
  EXPECT_EQ(config_json["torch_dtype"], "bfloat16");
  EXPECT_FALSE(config_json.contains("quantization_config"));
}

TEST_F(DummyCheckpointTest, Fp8BlocksAreAmaxScaledIncludingEdges) {
  const ModelConfig config = TinyConfig();  // 16x16 blocks over shapes like [24, 40]
  const std::string dir = Write(config, "fp8", DType::kF8E4M3, 7);
  const std::string bf16_dir = Write(config, "bf16", DType::kBF16, 7);
  std::unique_ptr<Checkpoint> ckpt = MustOpen(dir);
  std::unique_ptr<Checkpoint> ref = MustOpen(bf16_dir);
  ASSERT_NE(ckpt, nullptr);
  ASSERT_NE(ref, nullptr);
  ASSERT_TRUE(ckpt->config().quantization.has_value());
  EXPECT_EQ(ckpt->config().quantization->block_rows, 16);
  const std::vector<TensorSpec> inventory = CheckpointInventory(config, true);
  EXPECT_EQ(ckpt->TensorNames().size(), inventory.size());
  int quantized = 0;
  for (const TensorSpec& spec : inventory) {
    absl::StatusOr<TensorView> view = ckpt->Get(spec.name, {&spec.dtype, 1}, spec.shape);
    ASSERT_TRUE(view.ok()) << view.status();
    if (spec.dtype != DType::kF8E4M3) continue;
    ++quantized;
    const TensorView scales = *ckpt->GetAny(spec.name + "_scale_inv");
    const TensorView bf16 = *ref->GetAny(spec.name);
    const int64_t rows = spec.shape[0], cols = spec.shape[1];
    const int64_t grid_cols = scales.shape[1];
    std::vector<float> block_max(scales.num_elements(), 0.0f);
    std::vector<float> bf16_amax(scales.num_elements(), 0.0f);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const float code = kernels::F8E4M3ToF32(static_cast<uint8_t>(view->data[r * cols + c]));
        float scale;
        std::memcpy(&scale, scales.data + 4 * ((r / 16) * grid_cols + c / 16), 4);
        float& m = block_max[(r / 16) * grid_cols + c / 16];
        m = std::max(m, std::fabs(code));
        uint16_t b;
        std::memcpy(&b, bf16.data + 2 * (r * cols + c), 2);
        // FP8 keeps 3 mantissa bits, BF16 8: both are within 2^-4 relative
        // (or half an FP8 subnormal step) of the same underlying value.
        const float dequant = code * scale, reference = kernels::Bf16ToF32(b);
        float& amax = bf16_amax[(r / 16) * grid_cols + c / 16];
        amax = std::max(amax, std::fabs(reference));
        ASSERT_NEAR(dequant, reference, std::fabs(reference) * 0.07f + scale * 0x1p-9f)
            << spec.name << " [" << r << ", " << c << "]";
      }
    }
    // amax / 448 per block, partial edge blocks included: every block's
    // largest code is exactly +-448.
    for (float m : block_max) ASSERT_EQ(m, 448.0f) << spec.name;
    // And the scale is that amax / 448 (to BF16 rounding of the reference).
    for (int64_t i = 0; i < scales.num_elements(); ++i) {
      float scale;
      std::memcpy(&scale, scales.data + 4 * i, 4);
      ASSERT_NEAR(scale * 448.0f, bf16_amax[i], bf16_amax[i] * 0x1p-8f) << spec.name;
    }
  }
  EXPECT_GT(quantized, 0);
  const nlohmann::json config_json = nlohmann::json::parse(ReadBytes(dir + "/config.json"));
  EXPECT_EQ(config_json["quantization_config"]["weight_block_size"], nlohmann::json({16, 16}));
  EXPECT_EQ(config_json["quantization_config"]["quant_method"], "fp8");
}

TEST_F(DummyCheckpointTest, SameSeedSameBytesAndShardingKeepsValues) {
  ModelConfig config = TinyConfig();
  const std::string a = Write(config, "a", DType::kBF16, 11);
  const std::string b = Write(config, "b", DType::kBF16, 11);
  const std::string c = Write(config, "c", DType::kBF16, 12);
  EXPECT_EQ(ReadBytes(a + "/model.safetensors"), ReadBytes(b + "/model.safetensors"));
  EXPECT_NE(ReadBytes(a + "/model.safetensors"), ReadBytes(c + "/model.safetensors"));
  EXPECT_EQ(ReadBytes(a + "/config.json"), ReadBytes(c + "/config.json"));

  const std::string sharded = Write(config, "sharded", DType::kF8E4M3, 11, 3);
  const std::string single = Write(config, "single", DType::kF8E4M3, 11, 1);
  for (int s = 1; s <= 3; ++s) {
    EXPECT_TRUE(fs::exists(absl::StrCat(sharded, "/model-0000", s, "-of-00003.safetensors")));
  }
  EXPECT_FALSE(fs::exists(sharded + "/model.safetensors"));
  std::unique_ptr<Checkpoint> ckpt = MustOpen(sharded);
  std::unique_ptr<Checkpoint> ref = MustOpen(single);
  ASSERT_NE(ckpt, nullptr);
  ASSERT_NE(ref, nullptr);
  EXPECT_EQ(ckpt->num_files_opened(), 0);
  EXPECT_EQ(ckpt->TensorNames(), ref->TensorNames());
  for (const std::string& name : ckpt->TensorNames()) {
    TensorView x = *ckpt->GetAny(name), y = *ref->GetAny(name);
    ASSERT_EQ(x.size_bytes, y.size_bytes) << name;
    ASSERT_EQ(std::memcmp(x.data, y.data, x.size_bytes), 0) << name;
    if (name.ends_with("_scale_inv")) {  // a scale shares its weight's shard
      const std::string weight = name.substr(0, name.size() - 10);
      EXPECT_EQ(x.file, ckpt->GetAny(weight)->file) << name;
    }
  }
  EXPECT_EQ(ckpt->num_files_opened(), 3);

  // Rewriting the same directory unsharded removes the old shards and index.
  config.num_hidden_layers = 2;
  Write(config, "sharded", DType::kBF16, 11, 1);
  EXPECT_FALSE(fs::exists(sharded + "/model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(sharded + "/model-00001-of-00003.safetensors"));
  std::unique_ptr<Checkpoint> rewritten = MustOpen(sharded);
  ASSERT_NE(rewritten, nullptr);
  EXPECT_EQ(rewritten->config().num_hidden_layers, 2);
}

TEST_F(DummyCheckpointTest, Errors) {
  DummyWriteOptions options;
  options.num_shards = 0;
  absl::Status status = WriteDummyCheckpoint(TinyConfig(), root_ + "/x", options);
  EXPECT_THAT(status.message(), HasSubstr("num_shards (0)"));
  options.num_shards = 1;
  ModelConfig bad = TinyConfig();
  bad.n_group = 3;
  status = WriteDummyCheckpoint(bad, root_ + "/x", options);
  EXPECT_THAT(status.message(), HasSubstr("field 'n_group' (3) must divide"));
  options.weights_dtype = DType::kF32;
  status = WriteDummyCheckpoint(TinyConfig(), root_ + "/x", options);
  EXPECT_THAT(status.message(), HasSubstr("BF16 or F8_E4M3"));
  // A directory holding a checkpoint we did not write is left alone.
  fs::create_directories(root_ + "/real");
  fs::copy_file(std::string(kModels) + "bf16/config.json", root_ + "/real/config.json");
  options.weights_dtype = DType::kBF16;
  status = WriteDummyCheckpoint(TinyConfig(), root_ + "/real", options);
  EXPECT_THAT(status.message(), HasSubstr("refusing to overwrite"));
  EXPECT_EQ(ReadBytes(root_ + "/real/config.json"),
            ReadBytes(std::string(kModels) + "bf16/config.json"));
}

TEST_F(DummyCheckpointTest, CopiesTokenizerFilesOrRecordsWhyNot) {
  const std::string tokenizer_dir = "tests/fixtures/tokenizer";
  DummyWriteOptions options;
  options.num_threads = 2;
  options.tokenizer_dir = tokenizer_dir;
  const std::string dir = root_ + "/with_tokenizer";
  ASSERT_TRUE(WriteDummyCheckpoint(TinyConfig(), dir, options).ok());
  for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) {
    EXPECT_EQ(ReadBytes(dir + "/" + name), ReadBytes(tokenizer_dir + "/" + name)) << name;
  }
  EXPECT_THAT(ReadBytes(dir + "/README.md"),
              HasSubstr("- tokenizer: tokenizer.json and tokenizer_config.json"));

  // Rewritten without one: the old tokenizer files go, the README says why.
  options.tokenizer_dir.clear();
  options.no_tokenizer_reason = "ids do not fit";
  ASSERT_TRUE(WriteDummyCheckpoint(TinyConfig(), dir, options).ok());
  EXPECT_FALSE(fs::exists(dir + "/tokenizer.json"));
  EXPECT_FALSE(fs::exists(dir + "/tokenizer_config.json"));
  EXPECT_THAT(ReadBytes(dir + "/README.md"),
              HasSubstr("- tokenizer: none (ids do not fit); prompts must be token ids"));

  options.tokenizer_dir = root_ + "/missing";
  const absl::Status missing = WriteDummyCheckpoint(TinyConfig(), dir, options);
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.message()), HasSubstr("missing/tokenizer.json: cannot open"));
}

}  // namespace
}  // namespace xpd::model
