#include "tests/model/fixture_model.h"

#include <algorithm>
#include <cmath>

#include "gtest/gtest.h"

namespace xpd::testing {

FixtureModel LoadFixtureModel(const std::string& variant, kernels::Precision precision,
                              BackendKind backend, int threads,
                              std::function<bool(int64_t, int64_t)> hold_expert) {
  FixtureModel f;
  auto checkpoint = model::Checkpoint::Open(std::string(kFixtureRoot) + "/models/" + variant);
  EXPECT_TRUE(checkpoint.ok()) << checkpoint.status();
  if (!checkpoint.ok()) return f;
  f.checkpoint = std::move(*checkpoint);
  f.backend = backend == BackendKind::kCpu ? kernels::MakeCpuBackend(threads)
                                           : kernels::MakeReferenceBackend();
  auto m = model::DeepSeekModel::Load(
      *f.checkpoint,
      {.precision = precision, .load_mtp = !hold_expert, .hold_expert = std::move(hold_expert)},
      f.backend.get());
  EXPECT_TRUE(m.ok()) << m.status();
  if (!m.ok()) return f;
  f.model = std::move(*m);
  auto pool = runtime::LatentKvPool::Create(
      {.num_layers = f.model->cache_layers(),
       .latent_dim = static_cast<int32_t>(f.model->config().latent_dim()),
       .block_size = 16,  // small pages so the fixtures' prompts span several blocks
       .num_blocks = 64});
  EXPECT_TRUE(pool.ok()) << pool.status();
  if (pool.ok()) f.pool = std::move(*pool);
  return f;
}

std::string ExpectedDir(const std::string& variant) {
  return std::string(kFixtureRoot) + "/expected/" + (variant == "fp8-sharded" ? "fp8" : variant);
}

base::NpyArray LoadNpy(const std::string& path) {
  auto array = base::ReadNpy(path);
  EXPECT_TRUE(array.ok()) << array.status();
  return array.ok() ? *array : base::NpyArray{};
}

std::vector<int32_t> LoadIds(const std::string& path) { return LoadNpy(path).i32; }

float MaxAbsDiff(const float* a, const float* b, int64_t n) {
  float worst = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float d = std::fabs(a[i] - b[i]);
    if (!(d <= worst)) worst = std::isnan(d) ? INFINITY : d;
  }
  return worst;
}

int32_t ArgMax(const float* values, int64_t n) {
  return static_cast<int32_t>(std::max_element(values, values + n) - values);
}

}  // namespace xpd::testing
