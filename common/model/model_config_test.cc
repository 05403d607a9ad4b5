#include "common/model/model_config.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace xpd::model {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

constexpr char kModels[] = "tests/fixtures/dsv3-tiny/models/";

json FixtureJson(const std::string& variant = "bf16") {
  std::ifstream in(std::string(kModels) + variant + "/config.json");
  return json::parse(in);
}

// The 671B config.json values of spec §1.
json DeepSeekV3Json() {
  return json::parse(R"({
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
    "vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432,
    "moe_intermediate_size": 2048, "n_routed_experts": 256, "n_shared_experts": 1,
    "num_experts_per_tok": 8, "n_group": 8, "topk_group": 4, "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid", "topk_method": "noaux_tc", "norm_topk_prob": true,
    "first_k_dense_replace": 3, "moe_layer_freq": 1, "kv_lora_rank": 512, "q_lora_rank": 1536,
    "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
    "num_attention_heads": 128, "num_key_value_heads": 128, "num_hidden_layers": 61,
    "num_nextn_predict_layers": 1, "hidden_act": "silu", "rms_norm_eps": 1e-6,
    "rope_theta": 10000,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0,
                     "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096,
                     "type": "yarn"},
    "max_position_embeddings": 163840, "bos_token_id": 0, "eos_token_id": 1,
    "tie_word_embeddings": false, "attention_bias": false, "torch_dtype": "bfloat16",
    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3",
                            "quant_method": "fp8", "weight_block_size": [128, 128]},
    "aux_loss_alpha": 0.001, "seq_aux": true, "ep_size": 1, "use_cache": true
  })");
}

std::string ParseError(const json& j) {
  absl::StatusOr<ModelConfig> config = ParseModelConfig(j);
  return config.ok() ? "(parsed fine)" : std::string(config.status().message());
}

TEST(ModelConfigTest, ParsesFixtureConfig) {
  absl::StatusOr<ModelConfig> c = ParseModelConfig(FixtureJson());
  ASSERT_TRUE(c.ok()) << c.status();
  // Values from tests/fixtures/dsv3-tiny/README.md.
  EXPECT_EQ(c->vocab_size, 512);
  EXPECT_EQ(c->hidden_size, 64);
  EXPECT_EQ(c->num_hidden_layers, 4);
  EXPECT_EQ(c->first_k_dense_replace, 1);
  EXPECT_EQ(c->num_attention_heads, 4);
  EXPECT_EQ(c->q_lora_rank, 32);
  EXPECT_EQ(c->kv_lora_rank, 32);
  EXPECT_EQ(c->qk_head_dim(), 24);
  EXPECT_EQ(c->latent_dim(), 40);
  EXPECT_EQ(c->v_head_dim, 16);
  EXPECT_EQ(c->intermediate_size, 128);
  EXPECT_EQ(c->moe_intermediate_size, 32);
  EXPECT_EQ(c->n_routed_experts, 16);
  EXPECT_EQ(c->n_shared_experts, 1);
  EXPECT_EQ(c->num_experts_per_tok, 4);
  EXPECT_EQ(c->n_group, 4);
  EXPECT_EQ(c->topk_group, 2);
  EXPECT_DOUBLE_EQ(c->routed_scaling_factor, 2.5);
  EXPECT_EQ(c->max_position_embeddings, 256);
  EXPECT_EQ(c->num_nextn_predict_layers, 1);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-6);
  ASSERT_TRUE(c->rope_scaling.has_value());
  EXPECT_EQ(c->rope_scaling->type, "yarn");
  EXPECT_DOUBLE_EQ(c->rope_scaling->factor, 4.0);
  EXPECT_EQ(c->rope_scaling->original_max_position_embeddings, 64);
  EXPECT_FALSE(c->quantization.has_value());
  EXPECT_FALSE(c->IsMoeLayer(0));
  EXPECT_TRUE(c->IsMoeLayer(1));
  EXPECT_TRUE(c->IsMoeLayer(4));  // the MTP block
  // 24^-0.5 * (0.1 ln 4 + 1)^2, computed independently.
  EXPECT_NEAR(c->SoftmaxScale(), 0.2041241452 * 1.1386294361 * 1.1386294361, 1e-9);
}

TEST(ModelConfigTest, ParsesQuantizationBlock) {
  absl::StatusOr<ModelConfig> c = ParseModelConfig(FixtureJson("fp8-block16"));
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->quantization.has_value());
  EXPECT_EQ(c->quantization->block_rows, 16);
  EXPECT_EQ(c->quantization->block_cols, 16);
  EXPECT_EQ(c->quantization->scale_fmt, "");
  c = ParseModelConfig(FixtureJson("fp8"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->quantization->block_rows, 128);
}

TEST(ModelConfigTest, DeepSeekV3SoftmaxScale) {
  absl::StatusOr<ModelConfig> c = ParseModelConfig(DeepSeekV3Json());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_NEAR(c->SoftmaxScale(), 0.13523378, 5e-9);         // spec §3.5.3
  EXPECT_NEAR(c->SoftmaxScale(), 0.13523377886088, 1e-12);  // spec appendix B
  EXPECT_EQ(c->qk_head_dim(), 192);
  EXPECT_EQ(c->latent_dim(), 576);
  EXPECT_FALSE(c->IsMoeLayer(2));
  EXPECT_TRUE(c->IsMoeLayer(3));
}

TEST(ModelConfigTest, SoftmaxScaleWithoutYarn) {
  json j = DeepSeekV3Json();
  j["rope_scaling"] = nullptr;
  absl::StatusOr<ModelConfig> c = ParseModelConfig(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->rope_scaling.has_value());
  EXPECT_NEAR(c->SoftmaxScale(), 1.0 / std::sqrt(192.0), 1e-12);
  j = DeepSeekV3Json();
  j["rope_scaling"]["factor"] = 1.0;  // no extension: no correction
  c = ParseModelConfig(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_NEAR(c->SoftmaxScale(), 1.0 / std::sqrt(192.0), 1e-12);
}

TEST(ModelConfigTest, AcceptsRopeTypeSpellingAndScaleFmt) {
  json j = DeepSeekV3Json();
  j["rope_scaling"].erase("type");
  j["rope_scaling"]["rope_type"] = "yarn";
  j["quantization_config"]["scale_fmt"] = "ue8m0";
  j["some_future_key"] = {1, 2, 3};  // unknown keys are ignored
  absl::StatusOr<ModelConfig> c = ParseModelConfig(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling->type, "yarn");
  EXPECT_EQ(c->quantization->scale_fmt, "ue8m0");
}

TEST(ModelConfigTest, JsonRoundTrip) {
  for (const json& source : {FixtureJson(), FixtureJson("fp8-block16"), DeepSeekV3Json()}) {
    absl::StatusOr<ModelConfig> a = ParseModelConfig(source);
    ASSERT_TRUE(a.ok()) << a.status();
    const json written = ModelConfigToJson(*a);
    absl::StatusOr<ModelConfig> b = ParseModelConfig(written);
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ(ModelConfigToJson(*b), written);
    // Every key we write carries the source's value where the source has it.
    for (const auto& [key, value] : written.items()) {
      if (source.contains(key)) {
        EXPECT_EQ(source[key], value) << key;
      }
    }
    EXPECT_DOUBLE_EQ(a->SoftmaxScale(), b->SoftmaxScale());
  }
}

struct ErrorCase {
  std::string name;
  std::function<void(json&)> mutate;
  std::string message;
};

TEST(ModelConfigTest, ErrorsNameTheField) {
  const std::vector<ErrorCase> cases = {
      {"missing", [](json& j) { j.erase("vocab_size"); },
       "config.json: missing required field 'vocab_size'"},
      {"type", [](json& j) { j["hidden_size"] = "64"; },
       "field 'hidden_size' must be an integer, got string \"64\""},
      {"float for int", [](json& j) { j["num_hidden_layers"] = 4.5; },
       "field 'num_hidden_layers' must be an integer"},
      {"bool type", [](json& j) { j["norm_topk_prob"] = 1; },
       "field 'norm_topk_prob' must be a boolean"},
      {"double type", [](json& j) { j["rms_norm_eps"] = "small"; },
       "field 'rms_norm_eps' must be a number"},
      {"zero size", [](json& j) { j["num_attention_heads"] = 0; },
       "field 'num_attention_heads' (0) must be positive"},
      {"negative", [](json& j) { j["first_k_dense_replace"] = -1; },
       "field 'first_k_dense_replace' (-1) must not be negative"},
      {"n_group", [](json& j) { j["n_group"] = 3; },
       "config.json: field 'n_group' (3) must divide n_routed_experts (16)"},
      {"topk_group", [](json& j) { j["topk_group"] = 5; },
       "field 'topk_group' (5) must not exceed n_group (4)"},
      {"experts per tok", [](json& j) { j["num_experts_per_tok"] = 9; },
       "field 'num_experts_per_tok' (9) must not exceed the 8 experts"},
      {"dense layers", [](json& j) { j["first_k_dense_replace"] = 5; },
       "field 'first_k_dense_replace' (5) must not exceed num_hidden_layers (4)"},
      {"odd rope", [](json& j) { j["qk_rope_head_dim"] = 7; }, "field 'qk_rope_head_dim' (7)"},
      {"scoring", [](json& j) { j["scoring_func"] = "softmax"; },
       "field 'scoring_func' ('softmax') is not supported"},
      {"topk method", [](json& j) { j["topk_method"] = "greedy"; },
       "field 'topk_method' ('greedy') is not supported"},
      {"act", [](json& j) { j["hidden_act"] = "gelu"; },
       "field 'hidden_act' ('gelu') is not supported"},
      {"model type", [](json& j) { j["model_type"] = "deepseek_v2"; },
       "field 'model_type' ('deepseek_v2') is not supported"},
      {"tied", [](json& j) { j["tie_word_embeddings"] = true; },
       "field 'tie_word_embeddings' (true) is not supported"},
      {"q lora null", [](json& j) { j["q_lora_rank"] = nullptr; }, "field 'q_lora_rank' is null"},
      {"eos", [](json& j) { j["eos_token_id"] = 512; },
       "field 'eos_token_id' (512) must be below vocab_size (512)"},
      {"rope type", [](json& j) { j["rope_scaling"]["type"] = "linear"; },
       "field 'rope_scaling.type' ('linear') is not supported; xpd implements only 'yarn'"},
      {"rope_type",
       [](json& j) {
         j["rope_scaling"].erase("type");
         j["rope_scaling"]["rope_type"] = "dynamic";
       },
       "field 'rope_scaling.rope_type' ('dynamic') is not supported"},
      {"rope no type", [](json& j) { j["rope_scaling"].erase("type"); },
       "field 'rope_scaling' needs 'type' or 'rope_type'"},
      {"rope factor", [](json& j) { j["rope_scaling"]["factor"] = -2; },
       "field 'rope_scaling.factor' (-2) must be positive"},
      {"rope missing", [](json& j) { j["rope_scaling"].erase("original_max_position_embeddings"); },
       "missing required field 'rope_scaling.original_max_position_embeddings'"},
      {"rope not object", [](json& j) { j["rope_scaling"] = "yarn"; },
       "field 'rope_scaling' must be an object or null"},
      {"quant method",
       [](json& j) {
         j["quantization_config"] = {{"quant_method", "awq"}};
       },
       "field 'quantization_config.quant_method' ('awq') is not supported"},
      {"quant fmt",
       [](json& j) {
         j["quantization_config"] = {
             {"quant_method", "fp8"}, {"fmt", "e5m2"}, {"weight_block_size", {128, 128}}};
       },
       "field 'quantization_config.fmt' ('e5m2') is not supported"},
      {"quant block",
       [](json& j) {
         j["quantization_config"] = {{"quant_method", "fp8"}, {"weight_block_size", {128, 0}}};
       },
       "field 'quantization_config.weight_block_size' ([128,0]) must be [rows, cols]"},
      {"quant block missing",
       [](json& j) {
         j["quantization_config"] = {{"quant_method", "fp8"}};
       },
       "missing required field 'quantization_config.weight_block_size'"},
      {"scale fmt",
       [](json& j) {
         j["quantization_config"] = {
             {"quant_method", "fp8"}, {"weight_block_size", {1, 1}}, {"scale_fmt", "e4m3"}};
       },
       "field 'quantization_config.scale_fmt' ('e4m3') is not supported"},
  };
  for (const ErrorCase& c : cases) {
    json j = FixtureJson();
    c.mutate(j);
    EXPECT_THAT(ParseError(j), HasSubstr(c.message)) << c.name;
  }
  EXPECT_THAT(ParseError(json::array()), HasSubstr("config.json: expected a JSON object"));
}

TEST(ModelConfigTest, LoadErrorsNameTheFile) {
  const std::string missing = ::testing::TempDir() + "/no_such_config.json";
  absl::StatusOr<ModelConfig> c = LoadModelConfig(missing);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr(missing + ": cannot open"));

  const std::string bad = ::testing::TempDir() + "/bad_config.json";
  std::ofstream(bad) << "{\"vocab_size\": 12,";
  c = LoadModelConfig(bad);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr(bad + ": invalid JSON"));

  json j = FixtureJson();
  j["n_group"] = 3;
  std::ofstream(bad, std::ios::trunc) << j.dump();
  c = LoadModelConfig(bad);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr(bad + ": field 'n_group' (3) must divide"));
  std::remove(bad.c_str());

  c = LoadModelConfig(std::string(kModels) + "bf16/config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->vocab_size, 512);
}

}  // namespace
}  // namespace xpd::model
