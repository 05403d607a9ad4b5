// Loads the dsv3-tiny reference checkpoints (tests/fixtures/dsv3-tiny) and
// runs them the way the reference did: one prefill, then single-token decode.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/base/npy.h"
#include "common/model/checkpoint.h"
#include "common/model/deepseek_model.h"
#include "common/runtime/latent_kv_pool.h"
#include "gtest/gtest.h"
#include "kernels/backend/backend.h"

namespace xpd::testing {

inline constexpr char kFixtureRoot[] = "tests/fixtures/dsv3-tiny";

struct FixtureModel {
  std::unique_ptr<model::Checkpoint> checkpoint;
  std::unique_ptr<kernels::Backend> backend;
  std::unique_ptr<model::DeepSeekModel> model;
  std::unique_ptr<runtime::LatentKvPool> pool;
};

enum class BackendKind { kCpu, kReference };

// variant: "bf16", "fp8", "fp8-block16", "fp8-sharded".
// `hold_expert` limits the routed experts loaded (an expert-parallel rank).
FixtureModel LoadFixtureModel(const std::string& variant,
                              kernels::Precision precision = kernels::Precision::kF32,
                              BackendKind backend = BackendKind::kCpu, int threads = 2,
                              std::function<bool(int64_t, int64_t)> hold_expert = {});

// The expected/ folder for a variant ("fp8-sharded" shares fp8's).
std::string ExpectedDir(const std::string& variant);
base::NpyArray LoadNpy(const std::string& path);  // fails the test on error
std::vector<int32_t> LoadIds(const std::string& path);

// Largest |a - b| over two equally long arrays.
float MaxAbsDiff(const float* a, const float* b, int64_t n);
int32_t ArgMax(const float* values, int64_t n);

// gtest parameter names for checkpoint variants ("fp8-sharded" -> "fp8_sharded").
inline std::string VariantName(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = info.param;
  for (char& c : name) c = (c == '-') ? '_' : c;
  return name;
}

}  // namespace xpd::testing
