// The latent and MHA forms of MLA attention are the same math (spec §3.6.3):
// build keys/values from a random latent cache with random W_UK/W_UV, run
// both kernels, and compare with a double-precision brute force.
#include "kernels/attention/mla_attention.h"

#include <cmath>
#include <random>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/attention/latent_kernels.h"
#include "kernels/attention/mha_attention_gemm.h"
#include "kernels/core/cpu_features.h"

namespace xpd::kernels {
namespace {

constexpr int kHeads = 3, kRank = 20, kRope = 6, kNope = 8, kV = 7, kBlock = 4, kLayers = 2;

std::vector<float> Random(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

TEST(MlaAttentionTest, LatentAndMhaFormsMatchBruteForce) {
  std::mt19937 rng(7);
  const int start = 5, queries = 3, keys = start + queries;
  const float scale = 0.3f;
  // Paged cache with a scrambled block table.
  std::vector<float> pool(8 * kLayers * kBlock * (kRank + kRope), 0.0f);
  PagedLatentCache cache{.pool = pool.data(),
                         .num_layers = kLayers,
                         .block_size = kBlock,
                         .latent_dim = kRank + kRope};
  const int32_t table[] = {5, 2};
  const int layer = 1;
  std::vector<float> latent = Random(keys * (kRank + kRope), rng);
  for (int t = 0; t < keys; ++t) {
    std::copy_n(&latent[t * (kRank + kRope)], kRank + kRope, cache.Row(table, layer, t));
  }
  std::vector<float> w_uk = Random(kHeads * kNope * kRank, rng);  // [h][d][c]
  std::vector<float> w_uv = Random(kHeads * kV * kRank, rng);     // [h][d][c]
  std::vector<float> q = Random(queries * kHeads * (kNope + kRope), rng);

  // MHA inputs: kv[t][h] = [W_UK[h] c_t | W_UV[h] c_t]; k_pe = latent tail.
  std::vector<float> kv(keys * kHeads * (kNope + kV));
  for (int t = 0; t < keys; ++t) {
    for (int h = 0; h < kHeads; ++h) {
      for (int d = 0; d < kNope + kV; ++d) {
        double sum = 0;
        for (int c = 0; c < kRank; ++c) {
          const float w = d < kNope ? w_uk[(h * kNope + d) * kRank + c]
                                    : w_uv[(h * kV + d - kNope) * kRank + c];
          sum += double(w) * latent[t * (kRank + kRope) + c];
        }
        kv[(t * kHeads + h) * (kNope + kV) + d] = static_cast<float>(sum);
      }
    }
  }
  AttentionSequence seq{.query_row = 0,
                        .num_queries = queries,
                        .start = start,
                        .block_table = table,
                        .kv = kv.data(),
                        .k_pe = latent.data() + kRank,
                        .k_pe_stride = kRank + kRope};
  std::vector<float> mha_out(queries * kHeads * kV);
  ThreadPool pool2(2);
  ASSERT_TRUE(MhaAttention({.q = q.data(),
                            .out = mha_out.data(),
                            .heads = kHeads,
                            .nope_dim = kNope,
                            .rope_dim = kRope,
                            .v_dim = kV,
                            .softmax_scale = scale,
                            .sequences = {&seq, 1}},
                           &pool2)
                  .ok());

  // Latent inputs: q_abs = W_UK^T q_nope, then out = W_UV o_latent.
  std::vector<float> q_latent(queries * kHeads * (kRank + kRope));
  for (int i = 0; i < queries; ++i) {
    for (int h = 0; h < kHeads; ++h) {
      const float* qn = &q[(i * kHeads + h) * (kNope + kRope)];
      float* ql = &q_latent[(i * kHeads + h) * (kRank + kRope)];
      for (int c = 0; c < kRank; ++c) {
        double sum = 0;
        for (int d = 0; d < kNope; ++d) sum += double(qn[d]) * w_uk[(h * kNope + d) * kRank + c];
        ql[c] = static_cast<float>(sum);
      }
      std::copy_n(qn + kNope, kRope, ql + kRank);
    }
  }
  std::vector<float> latent_out(queries * kHeads * kRank);
  ASSERT_TRUE(LatentAttention({.q = q_latent.data(),
                               .out = latent_out.data(),
                               .cache = cache,
                               .layer = layer,
                               .heads = kHeads,
                               .kv_rank = kRank,
                               .rope_dim = kRope,
                               .softmax_scale = scale,
                               .sequences = {&seq, 1}},
                              nullptr)
                  .ok());

  // Brute force in double, causal from position start + i.
  for (int i = 0; i < queries; ++i) {
    for (int h = 0; h < kHeads; ++h) {
      const int visible = start + i + 1;
      std::vector<double> p(visible);
      double max_s = -1e300, sum = 0;
      for (int t = 0; t < visible; ++t) {
        double s = 0;
        for (int d = 0; d < kNope; ++d) {
          s += double(q[(i * kHeads + h) * (kNope + kRope) + d]) *
               kv[(t * kHeads + h) * (kNope + kV) + d];
        }
        for (int d = 0; d < kRope; ++d) {
          s += double(q[(i * kHeads + h) * (kNope + kRope) + kNope + d]) *
               latent[t * (kRank + kRope) + kRank + d];
        }
        p[t] = s * scale;
        max_s = std::max(max_s, p[t]);
      }
      for (double& v : p) sum += (v = std::exp(v - max_s));
      for (int d = 0; d < kV; ++d) {
        double want = 0, from_latent = 0;
        for (int t = 0; t < visible; ++t) {
          want += p[t] / sum * kv[(t * kHeads + h) * (kNope + kV) + kNope + d];
        }
        for (int c = 0; c < kRank; ++c) {
          from_latent +=
              double(w_uv[(h * kV + d) * kRank + c]) * latent_out[(i * kHeads + h) * kRank + c];
        }
        EXPECT_NEAR(mha_out[(i * kHeads + h) * kV + d], want, 1e-4) << i << " " << h << " " << d;
        EXPECT_NEAR(from_latent, want, 1e-4) << i << " " << h << " " << d;
      }
    }
  }
}

TEST(MlaAttentionTest, GemmFormMatchesLoopFormAcrossQueryBlocks) {
  std::mt19937 rng(11);
  const int heads = 2;
  // Key dims in whole groups of 8 and with ragged ends; values in a partial
  // tile and over two tiles. Keys: whole groups of 8 and a ragged end.
  for (const auto& [nope, rope, v] : {std::tuple{16, 8, 12}, std::tuple{13, 6, 40}}) {
    for (const auto& [start, queries] : {std::pair{0, 300}, std::pair{37, 130}, std::pair{5, 1}}) {
      const int keys = start + queries;
      std::vector<float> q = Random(queries * heads * (nope + rope), rng);
      std::vector<float> kv = Random(keys * heads * (nope + v), rng);
      std::vector<float> k_pe = Random(keys * 10, rng);
      AttentionSequence seq{.query_row = 0,
                            .num_queries = queries,
                            .start = start,
                            .kv = kv.data(),
                            .k_pe = k_pe.data(),
                            .k_pe_stride = 10};
      MhaAttentionArgs args{.q = q.data(),
                            .heads = heads,
                            .nope_dim = nope,
                            .rope_dim = rope,
                            .v_dim = v,
                            .softmax_scale = 0.25f,
                            .sequences = {&seq, 1}};
      std::vector<float> loop(queries * heads * v), gemm(queries * heads * v);
      args.out = loop.data();
      ASSERT_TRUE(MhaAttention(args, nullptr).ok());
      args.out = gemm.data();
      ThreadPool pool(2);
      ASSERT_TRUE(MhaAttentionGemm(args, pool).ok());
      for (size_t i = 0; i < loop.size(); ++i) {
        ASSERT_NEAR(gemm[i], loop[i], 2e-5)
            << "dims " << nope << "/" << rope << "/" << v << " start " << start << " index " << i;
      }
    }
  }
}

// The latent form over many heads and ragged widths (every vector path and
// tail), several sequences: within f32 rounding of a double brute force, and
// bit for bit the same whatever the thread count and whatever other
// sequences share the call (the kernel groups heads differently for each).
void ExpectLatentFormExact(const int heads) {
  std::mt19937 rng(23);
  const int rank = 21, rope = 6, width = rank + rope, block = 4, layers = 1;
  const float scale = 0.2f;
  std::vector<float> pool(64 * block * width);
  const PagedLatentCache cache{
      .pool = pool.data(), .num_layers = layers, .block_size = block, .latent_dim = width};
  std::vector<float> latent = Random(pool.size(), rng);
  std::copy(latent.begin(), latent.end(), pool.begin());
  // Three decoding sequences (one query each) over disjoint blocks.
  const std::vector<std::vector<int32_t>> tables = {{3, 7, 1}, {10, 11, 12, 13, 14}, {20}};
  const int starts[] = {9, 17, 2};
  std::vector<AttentionSequence> seqs;
  for (int s = 0; s < 3; ++s) {
    seqs.push_back(
        {.query_row = s, .num_queries = 1, .start = starts[s], .block_table = tables[s].data()});
  }
  const std::vector<float> q = Random(3 * heads * width, rng);
  auto run = [&](std::span<const AttentionSequence> batch, ThreadPool* threads) {
    std::vector<float> out(3 * heads * rank, -1.0f);
    EXPECT_TRUE(LatentAttention({.q = q.data(),
                                 .out = out.data(),
                                 .cache = cache,
                                 .layer = 0,
                                 .heads = heads,
                                 .kv_rank = rank,
                                 .rope_dim = rope,
                                 .softmax_scale = scale,
                                 .sequences = batch},
                                threads)
                    .ok());
    return out;
  };
  const std::vector<float> together = run(seqs, nullptr);
  for (int s = 0; s < 3; ++s) {
    for (int h = 0; h < heads; ++h) {
      const float* qh = &q[(s * heads + h) * width];
      const int visible = starts[s] + 1;
      std::vector<double> p(visible);
      double max_s = -1e300, sum = 0;
      for (int t = 0; t < visible; ++t) {
        const float* row = cache.Row(tables[s].data(), 0, t);
        double dot = 0;
        for (int c = 0; c < width; ++c) dot += double(qh[c]) * row[c];
        max_s = std::max(max_s, p[t] = dot * scale);
      }
      for (double& v : p) sum += (v = std::exp(v - max_s));
      for (int c = 0; c < rank; ++c) {
        double want = 0;
        for (int t = 0; t < visible; ++t) want += p[t] / sum * cache.Row(tables[s].data(), 0, t)[c];
        EXPECT_NEAR(together[(s * heads + h) * rank + c], want, 2e-5) << s << " " << h << " " << c;
      }
    }
  }
  for (int threads : {2, 3}) {
    ThreadPool pool_n(threads);
    EXPECT_EQ(run(seqs, &pool_n), together) << threads << " threads";
    for (int s = 0; s < 3; ++s) {
      const std::vector<float> alone = run({&seqs[s], 1}, &pool_n);
      for (int i = 0; i < heads * rank; ++i) {
        ASSERT_EQ(alone[s * heads * rank + i], together[s * heads * rank + i])
            << "sequence " << s << " alone, " << threads << " threads, element " << i;
      }
    }
  }
}

TEST(MlaAttentionTest, LatentFormIsExactAcrossThreadsAndBatches) {
  // 37 heads: more than one pass of 16 inside a group, groups of other sizes
  // for other thread counts.
  for (const int heads : {13, 37}) ExpectLatentFormExact(heads);
}

// Each ISA's latent-attention loops against double-precision sums, and each
// head's results independent of the heads that share its pass.
struct Named {
  std::string name;
  const internal::LatentKernels* kernels;
};

std::vector<Named> KernelSets() {
  std::vector<Named> sets = {{"avx2", &internal::Avx2LatentKernels()}};
  if (GetCpuFeatures().HasAvx512()) sets.push_back({"avx512", &internal::Avx512LatentKernels()});
  return sets;
}

TEST(LatentKernelsTest, ScoresAndWeightedSumsMatchDoubleSums) {
  std::mt19937 rng(3);
  // width 27 and n 21: whole vectors and ragged ends; 19 keys: whole passes
  // of 8 and a remainder.
  const int64_t width = 27, n = 21, keys = 19;
  const float scale = 0.3f;
  const std::vector<float> q_data = Random(internal::kMaxLatentGroupHeads * width, rng);
  const std::vector<float> row_data = Random(keys * width, rng);
  const std::vector<float> p_data = Random(internal::kMaxLatentGroupHeads * keys, rng);
  std::vector<const float*> rows(keys);
  for (int64_t t = 0; t < keys; ++t) rows[t] = &row_data[t * width];
  std::vector<float> scratch(width * internal::kMaxLatentGroupHeads);
  for (const Named& set : KernelSets()) {
    for (int heads : {1, 3, 4, 8, 13, 16}) {
      const float* q[internal::kMaxLatentGroupHeads];
      const float* p[internal::kMaxLatentGroupHeads];
      std::vector<float> score_data(heads * keys, -7.0f), out_data(heads * n, -7.0f);
      float* scores[internal::kMaxLatentGroupHeads];
      float* out[internal::kMaxLatentGroupHeads];
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

TEST(MlaAttentionTest, RejectsMismatchedDims) {
  std::vector<float> pool(64);
  PagedLatentCache cache{.pool = pool.data(), .num_layers = 1, .block_size = 4, .latent_dim = 8};
  float q[8], out[8];
  EXPECT_FALSE(
      LatentAttention({.q = q, .out = out, .cache = cache, .heads = 1, .kv_rank = 5, .rope_dim = 2},
                      nullptr)
          .ok());
}

}  // namespace
}  // namespace xpd::kernels
