// Each ISA's latent-attention loops against double-precision sums, and each
// head's results independent of the heads that share its pass.
#include "kernels/attention/latent_kernels.h"

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/core/cpu_features.h"

namespace xpd::kernels::internal {
namespace {

struct Named {
  std::string name;
  const LatentKernels* kernels;
};

std::vector<Named> KernelSets() {
  std::vector<Named> sets = {{"avx2", &Avx2LatentKernels()}};
  if (GetCpuFeatures().HasAvx512()) sets.push_back({"avx512", &Avx512LatentKernels()});
  return sets;
}

std::vector<float> Random(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

TEST(LatentKernelsTest, ScoresAndWeightedSumsMatchDoubleSums) {
  std::mt19937 rng(3);
  // width 27 and n 21: whole vectors and ragged ends; 19 keys: whole passes
  // of 8 and a remainder.
  const int64_t width = 27, n = 21, keys = 19;
  const float scale = 0.3f;
  const std::vector<float> q_data = Random(kMaxLatentGroupHeads * width, rng);
  const std::vector<float> row_data = Random(keys * width, rng);
  const std::vector<float> p_data = Random(kMaxLatentGroupHeads * keys, rng);
  std::vector<const float*> rows(keys);
  for (int64_t t = 0; t < keys; ++t) rows[t] = &row_data[t * width];
  std::vector<float> scratch(width * kMaxLatentGroupHeads + 16);
  for (const Named& set : KernelSets()) {
    for (int heads : {1, 3, 4, 8, 13, 16}) {
      const float* q[kMaxLatentGroupHeads];
      const float* p[kMaxLatentGroupHeads];
      std::vector<float> score_data(heads * keys, -7.0f), out_data(heads * n, -7.0f);
      float* scores[kMaxLatentGroupHeads];
      float* out[kMaxLatentGroupHeads];
      for (int h = 0; h < heads; ++h) {
        q[h] = &q_data[h * width];
        p[h] = &p_data[h * keys];
        scores[h] = &score_data[h * keys];
        out[h] = &out_data[h * n];
      }
      set.kernels->score(q, heads, rows.data(), keys, width, scale, scores, scratch.data());
      set.kernels->weighted_sum(p, heads, rows.data(), keys, out, n);
      for (int h = 0; h < heads; ++h) {
        for (int64_t t = 0; t < keys; ++t) {
          double dot = 0;
          for (int64_t d = 0; d < width; ++d) dot += double(q[h][d]) * rows[t][d];
          EXPECT_NEAR(scores[h][t], scale * dot, 1e-5) << set.name << " heads " << heads;
        }
        for (int64_t i = 0; i < n; ++i) {
          double sum = 0;
          for (int64_t t = 0; t < keys; ++t) sum += double(p[h][t]) * rows[t][i];
          EXPECT_NEAR(out[h][i], sum, 1e-5) << set.name << " heads " << heads << " i " << i;
        }
      }
      // A head alone gives the same bits as inside the group.
      for (int h = 0; h < heads; ++h) {
        std::vector<float> alone_scores(keys), alone_out(n);
        float* s1[1] = {alone_scores.data()};
        float* o1[1] = {alone_out.data()};
        set.kernels->score(&q[h], 1, rows.data(), keys, width, scale, s1, scratch.data());
        set.kernels->weighted_sum(&p[h], 1, rows.data(), keys, o1, n);
        for (int64_t t = 0; t < keys; ++t) {
          ASSERT_EQ(alone_scores[t], scores[h][t]) << set.name << " head " << h << " of " << heads;
        }
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_EQ(alone_out[i], out[h][i]) << set.name << " head " << h << " of " << heads;
        }
      }
    }
  }
}

}  // namespace
}  // namespace xpd::kernels::internal
