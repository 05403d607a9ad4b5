// BF16 compute mode against the f32 reference, with the fixtures' stated
// teacher-forced bounds: one prefill of prompt + gen_ids[:-1], compared with
// prompt_logits followed by step_logits[1:].
#include <cmath>
#include <string>

#include "gtest/gtest.h"
#include "tests/model/fixture_model.h"

namespace xpd::testing {
namespace {

class Bf16ComputeTest : public ::testing::TestWithParam<std::string> {};

TEST_P(Bf16ComputeTest, TeacherForcedWithinStatedBounds) {
  FixtureModel f = LoadFixtureModel(GetParam(), kernels::Precision::kBF16);
  ASSERT_NE(f.pool, nullptr);
  const int64_t vocab = f.model->config().vocab_size;
  int positions = 0, close = 0, generated = 0, agree = 0;
  std::vector<std::string> dirs;
  for (const char* name : {"single_len1", "single_len7", "single_len33"}) {
    dirs.push_back(ExpectedDir(GetParam()) + "/" + name);
  }
  for (int row = 0; row < 3; ++row) {
    dirs.push_back(ExpectedDir(GetParam()) + "/batch3/row" + std::to_string(row));
  }
  for (const std::string& dir : dirs) {
    std::vector<int32_t> tokens = LoadIds(dir + "/prompt_ids.npy");
    const std::vector<int32_t> gen = LoadIds(dir + "/gen_ids.npy");
    const base::NpyArray prompt_logits = LoadNpy(dir + "/prompt_logits.npy");
    const base::NpyArray step_logits = LoadNpy(dir + "/step_logits.npy");
    const int64_t t = tokens.size();
    tokens.insert(tokens.end(), gen.begin(), gen.end() - 1);
    std::vector<int32_t> blocks;
    ASSERT_TRUE(f.pool->Reserve(tokens.size(), &blocks).ok());
    model::ForwardBatch batch;
    batch.sequences.push_back(
        {.tokens = tokens, .start = 0, .block_table = blocks, .logits = model::LogitsRows::kAll});
    model::ForwardOutput out;
    ASSERT_TRUE(f.model->Forward(batch, f.pool->cache(), &out).ok());
    for (int64_t p = 0; p < static_cast<int64_t>(tokens.size()); ++p) {
      const float* want =
          p < t ? &prompt_logits.f32[p * vocab] : &step_logits.f32[(p - t + 1) * vocab];
      const float* ours = &out.logits[p * vocab];
      ++positions;
      close += MaxAbsDiff(ours, want, vocab) <= 0.5f;
      if (p >= t - 1) {
        ++generated;
        agree += ArgMax(ours, vocab) == gen[p - t + 1];
      }
    }
    f.pool->Free(blocks);
  }
  const double close_fraction = static_cast<double>(close) / positions;
  const double agree_fraction = static_cast<double>(agree) / generated;
  RecordProperty("close_fraction", std::to_string(close_fraction));
  RecordProperty("top1_agreement", std::to_string(agree_fraction));
  EXPECT_GE(close_fraction, 0.81) << close << "/" << positions << " positions within 0.5";
  EXPECT_GE(agree_fraction, 0.84) << agree << "/" << generated << " generated positions agree";
}

INSTANTIATE_TEST_SUITE_P(AllCheckpoints, Bf16ComputeTest,
                         ::testing::Values("bf16", "fp8", "fp8-block16"), VariantName);

}  // namespace
}  // namespace xpd::testing
