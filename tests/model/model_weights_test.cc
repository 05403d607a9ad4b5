// What LoadModelWeights hands the kernels: BF16 and FP8 projections packed
// into tiles with every value kept, and the matrices that are sliced or read
// row by row left row-major.
#include "common/model/model_weights.h"

#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/model/safetensors_writer.h"
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
    // The absorbed matrices are sliced per head: packed when each head
    // starts a tile (kv_lora_rank 32 here), row-major otherwise (v 16).
    const WeightMatrix& uk_t = w->layers[0].attention.uk_t.matrix;
    EXPECT_EQ(uk_t.layout, precision == Precision::kBF16 ? WeightLayout::kBf16Tiles32
                                                         : WeightLayout::kF32Tiles32);
    EXPECT_EQ(w->layers[0].attention.uv.matrix.layout, WeightLayout::kRowMajor);
    const ModelConfig& c = checkpoint->config();
    const int64_t rank = c.kv_lora_rank, nope = c.qk_nope_head_dim, v = c.v_head_dim;
    ASSERT_EQ(rank % kernels::kPackedTileRows, 0);
    ASSERT_NE(v % kernels::kPackedTileRows, 0);
    const WeightMatrix kv_b = Stored(*checkpoint, "model.layers.0.self_attn.kv_b_proj.weight");
    for (int64_t r = 0; r < uk_t.rows; ++r) {
      const int64_t h = r / rank, latent = r % rank;
      const WeightMatrix head = uk_t.RowSlice(h * rank, rank);
      for (int64_t col = 0; col < nope; ++col) {
        ASSERT_EQ(head.At(latent, col), kv_b.At(h * (nope + v) + col, latent)) << r << "," << col;
      }
    }
    // Read as stored: the router.
    EXPECT_EQ(moe_layer.moe.router.matrix.layout, WeightLayout::kRowMajor);
    // An expert's bytes as held include the padding of its last tiles.
    const MlpWeights& expert = moe_layer.moe.experts[3];
    EXPECT_EQ(MlpBytes(expert), kernels::StoredBytes(expert.gate.matrix) +
                                    kernels::StoredBytes(expert.up.matrix) +
                                    kernels::StoredBytes(expert.down.matrix));
  }
}

// FP8 keeps one byte per weight for both compute modes (decode streams
// half the bytes of BF16), packed with every value as stored.
TEST(ModelWeightsTest, Fp8IsPackedAsFp8ForBothComputeModes) {
  for (const char* fixture : {"fp8", "fp8-block16"}) {
    const auto checkpoint = OpenFixture(fixture);
    const std::string name = "model.layers.1.mlp.experts.0.down_proj.weight";
    const WeightMatrix stored = Stored(*checkpoint, name);
    ASSERT_EQ(stored.dtype, DType::kF8E4M3);
    for (Precision precision : {Precision::kF32, Precision::kBF16}) {
      absl::StatusOr<ModelWeights> w = LoadModelWeights(*checkpoint, {.precision = precision});
      ASSERT_TRUE(w.ok()) << w.status();
      const WeightMatrix& packed = w->layers[1].moe.experts[0].down.matrix;
      EXPECT_EQ(packed.dtype, DType::kF8E4M3);
      EXPECT_EQ(packed.layout, WeightLayout::kF8Tiles32);
      ExpectSameValues(packed, stored, false, std::string(fixture) + " " + name);
    }
  }
}

// Experts load on several threads; what they load, and the error reported
// when several are broken, must not depend on how many.
TEST(ModelWeightsTest, ExpertsLoadTheSameOnAnyNumberOfThreads) {
  const auto checkpoint = OpenFixture("bf16");
  absl::StatusOr<ModelWeights> one =
      LoadModelWeights(*checkpoint, {.precision = Precision::kBF16, .load_threads = 1});
  absl::StatusOr<ModelWeights> three =
      LoadModelWeights(*checkpoint, {.precision = Precision::kBF16, .load_threads = 3});
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_TRUE(three.ok()) << three.status();
  for (size_t layer = 0; layer < one->layers.size(); ++layer) {
    const MoeWeights& a = one->layers[layer].moe;
    const MoeWeights& b = three->layers[layer].moe;
    ASSERT_EQ(a.experts.size(), b.experts.size());
    for (size_t e = 0; e < a.experts.size(); ++e) {
      for (const auto member : {&MlpWeights::gate, &MlpWeights::up, &MlpWeights::down}) {
        const WeightMatrix& x = (a.experts[e].*member).matrix;
        const WeightMatrix& y = (b.experts[e].*member).matrix;
        ASSERT_EQ(kernels::StoredBytes(x), kernels::StoredBytes(y));
        ASSERT_EQ(std::memcmp(x.data, y.data, kernels::StoredBytes(x)), 0)
            << "layer " << layer << " expert " << e;
      }
    }
  }
}

// A fixture checkpoint rewritten into a fresh directory under TempDir(),
// tensor by tensor: `edit(name, bytes)` may change a tensor's bytes, or
// return false to leave the tensor out. Removed with the object.
class EditedFixture {
 public:
  using Edit = std::function<bool(const std::string& name, std::span<std::byte> bytes)>;
  EditedFixture(const std::string& variant, const Edit& edit) { Write(variant, edit); }
  ~EditedFixture() { std::filesystem::remove_all(dir_); }
  std::string file() const { return dir_ + "/model.safetensors"; }
  const Checkpoint& checkpoint() const { return *checkpoint_; }

 private:
  // Fatal failures end the test (checked with HasFatalFailure by the caller).
  void Write(const std::string& variant, const Edit& edit) {
    const auto fixture = OpenFixture(variant);
    dir_ = ::testing::TempDir() + "/edited_fixture_XXXXXX";
    if (mkdtemp(dir_.data()) == nullptr) {
      ADD_FAILURE() << "mkdtemp failed";
      return;
    }
    std::filesystem::copy_file(
        std::string(testing::kFixtureRoot) + "/models/" + variant + "/config.json",
        dir_ + "/config.json");
    SafetensorsWriter writer;
    for (const std::string& name : fixture->TensorNames()) {
      absl::StatusOr<TensorView> view = fixture->GetAny(name);
      ASSERT_TRUE(view.ok()) << view.status();
      const TensorView v = *view;
      std::vector<std::byte> bytes(v.data, v.data + v.size_bytes);
      if (!edit(name, bytes)) continue;
      ASSERT_TRUE(writer
                      .Add(name, v.dtype, v.shape,
                           [bytes = std::move(bytes)](std::span<std::byte> out) {
                             std::memcpy(out.data(), bytes.data(), out.size());
                           })
                      .ok());
    }
    ASSERT_TRUE(writer.Write(file()).ok());
    absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(dir_);
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
    checkpoint_ = *std::move(checkpoint);
  }

  std::string dir_;
  std::unique_ptr<Checkpoint> checkpoint_;
};

TEST(ModelWeightsTest, TheLowestBrokenExpertIsReportedWhateverTheThreads) {
  // Without the gate projections of experts 2 and 5 of layer 1.
  const EditedFixture broken("bf16", [](const std::string& name, std::span<std::byte>) {
    return name != "model.layers.1.mlp.experts.2.gate_proj.weight" &&
           name != "model.layers.1.mlp.experts.5.gate_proj.weight";
  });
  ASSERT_FALSE(HasFatalFailure());
  for (int threads : {1, 2, 4}) {
    absl::StatusOr<ModelWeights> w = LoadModelWeights(
        broken.checkpoint(),
        {.precision = Precision::kBF16, .load_mtp = false, .load_threads = threads});
    ASSERT_FALSE(w.ok());
    EXPECT_NE(w.status().message().find("experts.2.gate_proj"), std::string::npos)
        << threads << " threads: " << w.status();
  }
}

// A NaN code in an FP8 weight is refused at load, naming file, tensor and
// position, for both compute modes.
TEST(ModelWeightsTest, AnFp8NanCodeIsRejectedWithFileTensorAndPosition) {
  const std::string poisoned = "model.layers.1.mlp.experts.3.up_proj.weight";
  const int64_t cols = OpenFixture("fp8")->config().hidden_size;  // up_proj is [inter, hidden]
  const EditedFixture broken("fp8", [&](const std::string& name, std::span<std::byte> bytes) {
    if (name == poisoned) bytes[2 * cols + 9] = std::byte{0xff};  // row 2, column 9
    return true;
  });
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_EQ(Stored(broken.checkpoint(), poisoned).dtype, DType::kF8E4M3);
  ASSERT_EQ(Stored(broken.checkpoint(), poisoned).cols, cols);
  for (Precision precision : {Precision::kF32, Precision::kBF16}) {
    absl::StatusOr<ModelWeights> w =
        LoadModelWeights(broken.checkpoint(), {.precision = precision, .load_mtp = false});
    ASSERT_FALSE(w.ok());
    EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(w.status().message().find(broken.file() + ": tensor '" + poisoned + "': "),
              std::string::npos)
        << w.status();
    EXPECT_NE(w.status().message().find("holds a NaN code at [2, 9]"), std::string::npos)
        << w.status();
  }
}

}  // namespace
}  // namespace xpd::model
