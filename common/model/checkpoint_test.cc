#include "common/model/checkpoint.h"

#include <stdlib.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/model/safetensors_writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace xpd::model {
namespace {

using kernels::DType;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

constexpr char kModels[] = "tests/fixtures/dsv3-tiny/models/";
constexpr DType kBf16[] = {DType::kBF16};
constexpr DType kF32[] = {DType::kF32};
constexpr DType kF8[] = {DType::kF8E4M3};

std::unique_ptr<Checkpoint> OpenFixture(const std::string& variant) {
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(kModels + variant);
  EXPECT_TRUE(ckpt.ok()) << ckpt.status();
  return ckpt.ok() ? *std::move(ckpt) : nullptr;
}

float Bf16At(const TensorView& view, int64_t i) {
  uint16_t bits;
  std::memcpy(&bits, view.data + 2 * i, 2);
  return kernels::Bf16ToF32(bits);
}

float F32At(const TensorView& view, int64_t i) {
  float value;
  std::memcpy(&value, view.data + 4 * i, 4);
  return value;
}

// Fixture facts below were read independently with Python (struct + json).
TEST(CheckpointTest, LoadsBf16Fixture) {
  std::unique_ptr<Checkpoint> ckpt = OpenFixture("bf16");
  ASSERT_NE(ckpt, nullptr);
  EXPECT_EQ(ckpt->config().hidden_size, 64);
  EXPECT_EQ(ckpt->TensorNames().size(), 269u);
  EXPECT_EQ(ckpt->num_files_opened(), 1);
  const int64_t embed_shape[] = {512, 64};
  absl::StatusOr<TensorView> embed = ckpt->Get("model.embed_tokens.weight", kBf16, embed_shape);
  ASSERT_TRUE(embed.ok()) << embed.status();
  EXPECT_EQ(Bf16At(*embed, 0), 1.0546875f);
  EXPECT_EQ(Bf16At(*embed, 1), 1.7734375f);
  EXPECT_EQ(Bf16At(*embed, 2), -2.546875f);
  const int64_t norm_shape[] = {64};
  absl::StatusOr<TensorView> norm = ckpt->Get("model.norm.weight", kBf16, norm_shape);
  ASSERT_TRUE(norm.ok()) << norm.status();
  EXPECT_EQ(Bf16At(*norm, 0), 1.09375f);
  EXPECT_EQ(Bf16At(*norm, 1), 0.62109375f);
  const int64_t bias_shape[] = {16};
  absl::StatusOr<TensorView> bias =
      ckpt->Get("model.layers.1.mlp.gate.e_score_correction_bias", kF32, bias_shape);
  ASSERT_TRUE(bias.ok()) << bias.status();
  EXPECT_FLOAT_EQ(F32At(*bias, 0), -0.06241624802350998f);
  const int64_t kv_a_shape[] = {40, 64};
  absl::StatusOr<TensorView> kv_a =
      ckpt->Get("model.layers.0.self_attn.kv_a_proj_with_mqa.weight", kBf16, kv_a_shape);
  ASSERT_TRUE(kv_a.ok()) << kv_a.status();
  EXPECT_EQ(Bf16At(*kv_a, 0), 0.1494140625f);
  EXPECT_TRUE(ckpt->Has("model.layers.4.shared_head.head.weight"));
  EXPECT_TRUE(ckpt->Has("model.layers.3.mlp.experts.15.down_proj.weight"));
  EXPECT_FALSE(ckpt->Has("model.layers.0.mlp.experts.0.down_proj.weight"));
}

TEST(CheckpointTest, LoadsFp8Fixtures) {
  std::unique_ptr<Checkpoint> fp8 = OpenFixture("fp8");
  std::unique_ptr<Checkpoint> block16 = OpenFixture("fp8-block16");
  ASSERT_NE(fp8, nullptr);
  ASSERT_NE(block16, nullptr);
  const int64_t kv_a_shape[] = {40, 64};
  const std::string kv_a = "model.layers.0.self_attn.kv_a_proj_with_mqa.weight";
  absl::StatusOr<TensorView> w = fp8->Get(kv_a, kF8, kv_a_shape);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(static_cast<int>(w->data[0]), 113);
  EXPECT_EQ(static_cast<int>(w->data[1]), 107);
  // Scale grids are [ceil(rows/B), ceil(cols/B)]: 1x1 for B=128, 3x4 for B=16.
  const int64_t one_by_one[] = {1, 1};
  absl::StatusOr<TensorView> s = fp8->Get(kv_a + "_scale_inv", kF32, one_by_one);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_FLOAT_EQ(F32At(*s, 0), 0.0010851689148694277f);
  const int64_t grid[] = {3, 4};
  s = block16->Get(kv_a + "_scale_inv", kF32, grid);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_FLOAT_EQ(F32At(*s, 1), 0.000964299135375768f);
  const int64_t q_b_grid[] = {6, 2};  // q_b_proj [96, 32]
  EXPECT_TRUE(
      block16->Get("model.layers.0.self_attn.q_b_proj.weight_scale_inv", kF32, q_b_grid).ok());
  const int64_t down_grid[] = {4, 8};  // dense down_proj [64, 128]
  EXPECT_TRUE(block16->Get("model.layers.0.mlp.down_proj.weight_scale_inv", kF32, down_grid).ok());
  // Router, norms and the head stay unquantized.
  const int64_t router_shape[] = {16, 64};
  EXPECT_TRUE(fp8->Get("model.layers.2.mlp.gate.weight", kBf16, router_shape).ok());
  EXPECT_FALSE(fp8->Has("model.layers.2.mlp.gate.weight_scale_inv"));
  EXPECT_EQ(fp8->TensorNames().size(), 501u);
}

TEST(CheckpointTest, ShardedFixtureOpensShardsLazily) {
  std::unique_ptr<Checkpoint> ckpt = OpenFixture("fp8-sharded");
  ASSERT_NE(ckpt, nullptr);
  EXPECT_EQ(ckpt->num_files_opened(), 0);
  EXPECT_EQ(ckpt->TensorNames().size(), 501u);
  const std::string q_b = "model.layers.0.self_attn.q_b_proj.weight";
  const int64_t q_b_shape[] = {96, 32};
  absl::StatusOr<TensorView> w = ckpt->Get(q_b, kF8, q_b_shape);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(ckpt->num_files_opened(), 1);
  EXPECT_THAT(w->file, HasSubstr("model-00001-of-00002.safetensors"));
  const int64_t grid[] = {1, 1};
  absl::StatusOr<TensorView> s = ckpt->Get(q_b + "_scale_inv", kF32, grid);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_THAT(s->file, HasSubstr("model-00002-of-00002.safetensors"));
  EXPECT_EQ(ckpt->num_files_opened(), 2);
  EXPECT_FLOAT_EQ(F32At(*s, 0), 0.0014700768515467644f);
  // Same bytes as the single-file fp8 checkpoint.
  std::unique_ptr<Checkpoint> single = OpenFixture("fp8");
  absl::StatusOr<TensorView> w1 = single->GetAny(q_b);
  ASSERT_TRUE(w1.ok());
  EXPECT_EQ(std::memcmp(w->data, w1->data, w->size_bytes), 0);
}

TEST(CheckpointTest, ConcurrentFirstUseOpensEachShardOnce) {
  std::unique_ptr<Checkpoint> ckpt = OpenFixture("fp8-sharded");
  ASSERT_NE(ckpt, nullptr);
  const std::vector<std::string> names = ckpt->TensorNames();
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = t; i < names.size(); i += 3) {
        if (!ckpt->GetAny(names[i]).ok()) ++failures;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(ckpt->num_files_opened(), 2);
}

// A scratch checkpoint directory with the fixture's config.json.
class ScratchCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/ckpt_XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    fs::copy_file(std::string(kModels) + "bf16/config.json", dir_ + "/config.json");
  }
  void TearDown() override { fs::remove_all(dir_); }

  void WriteWeights(const std::string& file, bool with_i64 = false) {
    SafetensorsWriter writer;
    ASSERT_TRUE(writer.Add("model.norm.weight", DType::kBF16, {32}, nullptr).ok());
    ASSERT_TRUE(writer.Add("lm_head.weight", DType::kBF16, {4, 8}, nullptr).ok());
    if (with_i64) {
      ASSERT_TRUE(writer.AddRaw("step", "I64", 8, {1}, nullptr).ok());
    }
    ASSERT_TRUE(writer.Write(dir_ + "/" + file).ok());
  }
  std::string OpenError() {
    absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir_);
    return ckpt.ok() ? "(opened fine)" : std::string(ckpt.status().message());
  }

  std::string dir_;
};

TEST_F(ScratchCheckpoint, GetErrorsNameFileTensorAndReason) {
  WriteWeights("model.safetensors", /*with_i64=*/true);
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir_ + "/");
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const Checkpoint& c = **ckpt;
  const std::string file = dir_ + "/model.safetensors";
  const int64_t want64[] = {64};
  absl::StatusOr<TensorView> r = c.Get("model.norm.weight", kBf16, want64);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(),
            file + ": tensor 'model.norm.weight': shape [32] != expected [64]");
  const int64_t want2d[] = {32, 1};
  r = c.Get("model.norm.weight", kBf16, want2d);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("shape [32] != expected [32, 1]"));
  const int64_t want32[] = {32};
  r = c.Get("model.norm.weight", kF32, want32);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(),
            file + ": tensor 'model.norm.weight': dtype BF16 not in expected {F32}");
  const DType either[] = {DType::kF8E4M3, DType::kF32};
  r = c.Get("model.norm.weight", either, want32);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("not in expected {F8_E4M3, F32}"));
  EXPECT_TRUE(c.Get("model.norm.weight", kBf16, want32).ok());
  r = c.Get("model.embed_tokens.weight", kBf16, want32);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::IsNotFound(r.status()));
  EXPECT_EQ(r.status().message(),
            dir_ + ": tensor 'model.embed_tokens.weight': missing from checkpoint");
  // A dtype xpd does not compute with is listed, and refused only when asked for.
  EXPECT_TRUE(c.Has("step"));
  const int64_t one[] = {1};
  r = c.Get("step", kF32, one);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(),
              HasSubstr(file + ": tensor 'step': dtype I64 is not supported"));
}

TEST_F(ScratchCheckpoint, MissingConfig) {
  WriteWeights("model.safetensors");
  fs::remove(dir_ + "/config.json");
  EXPECT_THAT(OpenError(), HasSubstr(dir_ + ": no config.json"));
}

TEST_F(ScratchCheckpoint, InvalidConfigNamesPath) {
  WriteWeights("model.safetensors");
  std::ofstream(dir_ + "/config.json", std::ios::trunc) << "{}";
  EXPECT_THAT(OpenError(), HasSubstr(dir_ + "/config.json: missing required field 'model_type'"));
}

TEST_F(ScratchCheckpoint, NoWeights) {
  EXPECT_THAT(OpenError(), HasSubstr(dir_ + ": no weights (neither model.safetensors nor "
                                            "model.safetensors.index.json)"));
}

TEST_F(ScratchCheckpoint, MissingDirectory) {
  const std::string missing = dir_ + "/nope";
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(missing);
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(ckpt.status().message(), HasSubstr(missing + ": cannot open checkpoint directory"));
}

TEST_F(ScratchCheckpoint, CorruptSingleFileFailsAtOpen) {
  std::ofstream(dir_ + "/model.safetensors", std::ios::binary) << "short";
  EXPECT_THAT(OpenError(), HasSubstr(dir_ + "/model.safetensors: truncated"));
}

TEST_F(ScratchCheckpoint, IndexErrors) {
  WriteWeights("model-00001-of-00002.safetensors");
  const std::string index = dir_ + "/model.safetensors.index.json";
  ASSERT_TRUE(WriteSafetensorsIndex(index,
                                    {{"model.norm.weight", "model-00001-of-00002.safetensors"},
                                     {"lm_head.weight", "model-00002-of-00002.safetensors"}},
                                    0)
                  .ok());
  EXPECT_THAT(OpenError(),
              HasSubstr(index +
                        ": tensor 'lm_head.weight' is in shard "
                        "'model-00002-of-00002.safetensors', which does not exist in " +
                        dir_));

  ASSERT_TRUE(WriteSafetensorsIndex(index,
                                    {{"model.norm.weight", "model-00001-of-00002.safetensors"},
                                     {"extra.weight", "model-00001-of-00002.safetensors"}},
                                    0)
                  .ok());
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir_);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->num_files_opened(), 0);
  absl::StatusOr<TensorView> r = (*ckpt)->GetAny("extra.weight");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(),
              HasSubstr("model-00001-of-00002.safetensors: tensor 'extra.weight': listed in "
                        "model.safetensors.index.json but not in this shard"));
  EXPECT_TRUE((*ckpt)->GetAny("model.norm.weight").ok());
  EXPECT_EQ((*ckpt)->num_files_opened(), 1);

  ASSERT_TRUE(
      WriteSafetensorsIndex(index, {{"model.norm.weight", "../escape.safetensors"}}, 0).ok());
  EXPECT_THAT(OpenError(), HasSubstr("bad shard file name \"../escape.safetensors\""));
  std::ofstream(index, std::ios::trunc) << R"({"metadata": {}})";
  EXPECT_THAT(OpenError(), HasSubstr(index + ": expected an object with a 'weight_map'"));
  std::ofstream(index, std::ios::trunc) << "{not json";
  EXPECT_THAT(OpenError(), HasSubstr(index + ": invalid JSON"));
}

TEST_F(ScratchCheckpoint, CorruptShardFailsAtFirstGet) {
  std::ofstream(dir_ + "/model-00001-of-00001.safetensors", std::ios::binary) << "12345678{}";
  ASSERT_TRUE(WriteSafetensorsIndex(dir_ + "/model.safetensors.index.json",
                                    {{"model.norm.weight", "model-00001-of-00001.safetensors"}}, 0)
                  .ok());
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir_);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  absl::StatusOr<TensorView> r = (*ckpt)->GetAny("model.norm.weight");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("model-00001-of-00001.safetensors: "));
  EXPECT_THAT(r.status().message(), HasSubstr("exceeds"));
  EXPECT_EQ((*ckpt)->num_files_opened(), 0);
}

}  // namespace
}  // namespace xpd::model
