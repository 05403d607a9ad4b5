// The stable `xpd` command lines, run as real processes against the
// dsv3-tiny fixtures: outputs are compared with DeepSeek's reference values.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/base/npy.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cli/run_xpd.h"

namespace {

using xpd::testing::ProcessResult;
using xpd::testing::RunXpd;

constexpr char kFixtures[] = "tests/fixtures/dsv3-tiny";

std::string TokensFlag(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) {
    if (!s.empty()) s += ',';
    s += std::to_string(id);
  }
  return s;
}

std::string TempPath(const std::string& name) {
  return (std::filesystem::path(::testing::TempDir()) / name).string();
}

TEST(XpdCliTest, GenerateMatchesReferenceGreedyTokens) {
  const std::string dir = std::string(kFixtures) + "/expected/fp8/single_len7";
  const std::vector<int32_t> prompt = xpd::base::ReadNpy(dir + "/prompt_ids.npy")->i32;
  const std::vector<int32_t> gen = xpd::base::ReadNpy(dir + "/gen_ids.npy")->i32;
  ProcessResult run =
      RunXpd("generate --model " + std::string(kFixtures) + "/models/fp8-sharded --tokens " +
             TokensFlag(prompt) + " --max-tokens 8 --temperature 0 --ignore-eos");
  ASSERT_EQ(run.exit_code, 0);
  const nlohmann::json out = nlohmann::json::parse(run.out);
  EXPECT_EQ(out, nlohmann::json({{"tokens", gen}}));
}

TEST(XpdCliTest, LogitsWritesPromptLogitsAsNpy) {
  const std::string dir = std::string(kFixtures) + "/expected/bf16/single_len7";
  const std::vector<int32_t> prompt = xpd::base::ReadNpy(dir + "/prompt_ids.npy")->i32;
  const std::string out = TempPath("logits.npy");
  ProcessResult run = RunXpd("logits --model " + std::string(kFixtures) + "/models/bf16 --tokens " +
                             TokensFlag(prompt) + " --out " + out);
  ASSERT_EQ(run.exit_code, 0);
  auto ours = xpd::base::ReadNpy(out);
  auto want = xpd::base::ReadNpy(dir + "/prompt_logits.npy");
  ASSERT_TRUE(ours.ok()) << ours.status();
  ASSERT_EQ(ours->shape, want->shape);
  for (size_t i = 0; i < want->f32.size(); ++i) ASSERT_NEAR(ours->f32[i], want->f32[i], 1e-3) << i;
}

TEST(XpdCliTest, MtpLogitsMatchReference) {
  const std::string dir = std::string(kFixtures) + "/expected/fp8-block16/single_len33";
  const std::vector<int32_t> prompt = xpd::base::ReadNpy(dir + "/prompt_ids.npy")->i32;
  const std::string out = TempPath("mtp.npy");
  ProcessResult run =
      RunXpd("logits --mtp --model " + std::string(kFixtures) + "/models/fp8-block16 " +
             "--tokens " + TokensFlag(prompt) + " --out " + out);
  ASSERT_EQ(run.exit_code, 0);
  auto ours = xpd::base::ReadNpy(out);
  auto want = xpd::base::ReadNpy(dir + "/mtp_logits.npy");
  ASSERT_TRUE(ours.ok()) << ours.status();
  ASSERT_EQ(ours->shape, want->shape);
  for (size_t i = 0; i < want->f32.size(); ++i) ASSERT_NEAR(ours->f32[i], want->f32[i], 1e-3) << i;
}

TEST(XpdCliTest, Bf16ComputeRunsAndErrorsAreReported) {
  const std::string model = std::string(kFixtures) + "/models/bf16";
  EXPECT_EQ(RunXpd("generate --model " + model +
                   " --tokens 1,2,3 --max-tokens 2 --temperature 0 "
                   "--compute bf16")
                .exit_code,
            0);
  // Token outside the vocabulary, unknown flag, bad compute mode, missing model: non-zero.
  EXPECT_NE(RunXpd("generate --model " + model + " --tokens 1,99999 --max-tokens 2").exit_code, 0);
  EXPECT_EQ(RunXpd("generate --model " + model + " --tokens 1 --bogus 3").exit_code, 2);
  EXPECT_EQ(RunXpd("logits --model " + model + " --tokens 1 --out x.npy --compute f16").exit_code,
            2);
  EXPECT_NE(RunXpd("generate --model /nonexistent --tokens 1").exit_code, 0);
  EXPECT_EQ(RunXpd("frobnicate").exit_code, 2);
}

TEST(XpdCliTest, BenchPrintsRequiredJsonFields) {
  ProcessResult run = RunXpd("bench --model " + std::string(kFixtures) +
                             "/models/bf16 --prompt-tokens 16 --gen-tokens 4 --batch 2 --threads 2 "
                             "--compute bf16 --format json");
  ASSERT_EQ(run.exit_code, 0);
  const nlohmann::json out = nlohmann::json::parse(run.out);
  for (const char* key :
       {"prefill_tokens_per_s", "decode_tokens_per_s", "peak_rss_bytes", "bandwidth_bytes_per_s"}) {
    ASSERT_TRUE(out.contains(key)) << key;
    EXPECT_GT(out[key].get<double>(), 0.0) << key;
  }
}

// The bandwidth bound counts the bytes the loaded weights occupy: BF16
// weights are two bytes whatever --compute is, FP8 about one; only the
// absorbed MLA matrices (W_UK^T, W_UV, derived at load) follow --compute.
TEST(XpdCliTest, BenchCountsWeightBytesAsLoaded) {
  auto step_bytes = [](const std::string& model, const std::string& compute) {
    ProcessResult run =
        RunXpd("bench --model " + std::string(kFixtures) + "/models/" + model +
               " --prompt-tokens 4 --gen-tokens 2 --batch 1 --threads 1 --compute " + compute +
               " --format json");
    EXPECT_EQ(run.exit_code, 0) << run.err;
    return nlohmann::json::parse(run.out)["decode_weight_bytes_per_step"].get<double>();
  };
  std::ifstream config_file(std::string(kFixtures) + "/models/bf16/config.json");
  const nlohmann::json config = nlohmann::json::parse(config_file);
  const double absorbed_values =
      config["num_hidden_layers"].get<double>() * config["num_attention_heads"].get<double>() *
      config["kv_lora_rank"].get<double>() *
      (config["qk_nope_head_dim"].get<double>() + config["v_head_dim"].get<double>());
  // F32 absorbed matrices take 2 bytes per value more than BF16 ones.
  const double bf16 = step_bytes("bf16", "bf16");
  EXPECT_EQ(step_bytes("bf16", "f32"), bf16 + 2 * absorbed_values);
  const double fp8 = step_bytes("fp8", "bf16");
  EXPECT_EQ(step_bytes("fp8", "f32"), fp8 + 2 * absorbed_values);
  // The projections shrink from 2 bytes to 1 + 4/128; router and head stay BF16.
  EXPECT_LT(fp8, 0.8 * bf16);
  EXPECT_GT(fp8, 0.5 * bf16);
}

}  // namespace
