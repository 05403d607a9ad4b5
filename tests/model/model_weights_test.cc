// What LoadModelWeights hands the kernels: BF16 projections packed into tiles
// with every value kept, the matrices that are sliced or read row by row left
// row-major, and FP8 kept as stored for f32 compute.
#include "common/model/model_weights.h"

#include <string>

#include "gtest/gtest.h"
#include "kernels/matmul/weight_packing.h"
#include "tests/model/fixture_model.h"

namespace xpd::model {
namespace {

using kernels::DType;
using kernels::Precision;
using kernels::WeightLayout;
using kernels::WeightMatrix;

std::unique_ptr<Checkpoint> OpenFixture(const std::string& variant) {
  auto checkpoint = Checkpoint::Open(std::string(testing::kFixtureRoot) + "/models/" + variant);
  EXPECT_TRUE(checkpoint.ok()) << checkpoint.status();
  return *std::move(checkpoint);
}

// The tensor as the checkpoint stores it (row-major, with its block scales).
WeightMatrix Stored(const Checkpoint& checkpoint, const std::string& name) {
  absl::StatusOr<TensorView> view = checkpoint.GetAny(name);
  EXPECT_TRUE(view.ok()) << view.status();
  WeightMatrix w{
      .dtype = view->dtype, .data = view->data, .rows = view->shape[0], .cols = view->shape[1]};
  if (view->dtype == DType::kF8E4M3) {
    absl::StatusOr<TensorView> scales = checkpoint.GetAny(name + "_scale_inv");
    EXPECT_TRUE(scales.ok()) << scales.status();
    w.block_scales = reinterpret_cast<const float*>(scales->data);
    const auto& q = checkpoint.config().quantization;
    w.block_rows = q ? q->block_rows : 128;
    w.block_cols = q ? q->block_cols : 128;
  }
  return w;
}

void ExpectSameValues(const WeightMatrix& loaded, const WeightMatrix& stored, bool round_to_bf16,
                      const std::string& what) {
  ASSERT_EQ(loaded.rows, stored.rows) << what;
  ASSERT_EQ(loaded.cols, stored.cols) << what;
  for (int64_t r = 0; r < stored.rows; ++r) {
    for (int64_t c = 0; c < stored.cols; ++c) {
      const float want = round_to_bf16 ? kernels::RoundToBf16(stored.At(r, c)) : stored.At(r, c);
      ASSERT_EQ(loaded.At(r, c), want) << what << " [" << r << ", " << c << "]";
    }
  }
}

TEST(ModelWeightsTest, Bf16ProjectionsArePackedAndKeepEveryValue) {
  const auto checkpoint = OpenFixture("bf16");
  for (Precision precision : {Precision::kF32, Precision::kBF16}) {
    absl::StatusOr<ModelWeights> w = LoadModelWeights(*checkpoint, {.precision = precision});
    ASSERT_TRUE(w.ok()) << w.status();
    const DecoderLayerWeights& moe_layer = w->layers[1];
    ASSERT_TRUE(moe_layer.is_moe);
    const struct {
      const WeightMatrix& loaded;
      std::string name;
    } packed[] = {
        {w->layers[0].attention.q_a.matrix, "model.layers.0.self_attn.q_a_proj.weight"},
        {w->layers[0].attention.kv_b.matrix, "model.layers.0.self_attn.kv_b_proj.weight"},
        {w->layers[0].dense.down.matrix, "model.layers.0.mlp.down_proj.weight"},
        {moe_layer.moe.experts[3].gate.matrix, "model.layers.1.mlp.experts.3.gate_proj.weight"},
        {moe_layer.moe.shared.up.matrix, "model.layers.1.mlp.shared_experts.up_proj.weight"},
        {w->lm_head.matrix, "lm_head.weight"},
    };
    for (const auto& p : packed) {
      EXPECT_EQ(p.loaded.layout, WeightLayout::kBf16Tiles32) << p.name;
      ExpectSameValues(p.loaded, Stored(*checkpoint, p.name), false, p.name);
    }
    // Sliced per head (uk_t, uv) or read as stored (router): row-major.
    EXPECT_EQ(w->layers[0].attention.uk_t.matrix.layout, WeightLayout::kRowMajor);
    EXPECT_EQ(w->layers[0].attention.uv.matrix.layout, WeightLayout::kRowMajor);
    EXPECT_EQ(moe_layer.moe.router.matrix.layout, WeightLayout::kRowMajor);
    // An expert's bytes as held include the padding of its last tiles.
    const MlpWeights& expert = moe_layer.moe.experts[3];
    EXPECT_EQ(MlpBytes(expert), kernels::StoredBytes(expert.gate.matrix) +
                                    kernels::StoredBytes(expert.up.matrix) +
                                    kernels::StoredBytes(expert.down.matrix));
  }
}

TEST(ModelWeightsTest, Fp8StaysAsStoredForF32AndIsPackedAsBf16ForBf16) {
  const auto checkpoint = OpenFixture("fp8");
  const std::string name = "model.layers.1.mlp.experts.0.down_proj.weight";
  const WeightMatrix stored = Stored(*checkpoint, name);
  ASSERT_EQ(stored.dtype, DType::kF8E4M3);

  absl::StatusOr<ModelWeights> f32 = LoadModelWeights(*checkpoint, {.precision = Precision::kF32});
  ASSERT_TRUE(f32.ok()) << f32.status();
  const WeightMatrix& as_stored = f32->layers[1].moe.experts[0].down.matrix;
  EXPECT_EQ(as_stored.dtype, DType::kF8E4M3);
  EXPECT_EQ(as_stored.layout, WeightLayout::kRowMajor);
  EXPECT_EQ(as_stored.data, stored.data);

  absl::StatusOr<ModelWeights> bf16 =
      LoadModelWeights(*checkpoint, {.precision = Precision::kBF16});
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  const WeightMatrix& converted = bf16->layers[1].moe.experts[0].down.matrix;
  EXPECT_EQ(converted.dtype, DType::kBF16);
  EXPECT_EQ(converted.layout, WeightLayout::kBf16Tiles32);
  ExpectSameValues(converted, stored, true, name);
}

}  // namespace
}  // namespace xpd::model
