#include "kernels/attention/mha_attention_gemm.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/matmul/matmul.h"

namespace xpd::kernels {
namespace {

constexpr int64_t kQueryBlock = 128;

}  // namespace

absl::Status MhaAttentionGemm(const MhaAttentionArgs& a, ThreadPool& pool) {
  if (a.q == nullptr || a.out == nullptr || a.heads <= 0) {
    return absl::InvalidArgumentError("MhaAttentionGemm: bad buffers or dims");
  }
  const int64_t qk = a.nope_dim + a.rope_dim, kv_width = a.nope_dim + a.v_dim;
  std::vector<float> keys, values_t, scores;
  for (const AttentionSequence& seq : a.sequences) {
    if (seq.kv == nullptr || seq.k_pe == nullptr || seq.num_queries < 0 || seq.start < 0) {
      return absl::InvalidArgumentError("MhaAttentionGemm: sequence without keys");
    }
    const int64_t total_keys = seq.start + seq.num_queries;
    keys.resize(total_keys * qk);
    values_t.resize(a.v_dim * total_keys);
    for (int32_t h = 0; h < a.heads; ++h) {
      // K_h = [k_nope | k_pe] rows, and V_h^T so that P V is an x * W^T product.
      pool.ParallelFor(total_keys, 64, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
          const float* kv = seq.kv + (t * a.heads + h) * kv_width;
          std::copy_n(kv, a.nope_dim, &keys[t * qk]);
          std::copy_n(seq.k_pe + t * seq.k_pe_stride, a.rope_dim, &keys[t * qk + a.nope_dim]);
          for (int32_t d = 0; d < a.v_dim; ++d) values_t[d * total_keys + t] = kv[a.nope_dim + d];
        }
      });
      for (int64_t q0 = 0; q0 < seq.num_queries; q0 += kQueryBlock) {
        const int64_t rows = std::min<int64_t>(kQueryBlock, seq.num_queries - q0);
        const int64_t visible = seq.start + q0 + rows;  // keys the block's last query sees
        scores.resize(rows * visible);
        const WeightMatrix k_matrix{
            .dtype = DType::kF32, .data = keys.data(), .rows = visible, .cols = qk};
        const float* q = a.q + ((seq.query_row + q0) * a.heads + h) * qk;
        absl::Status status = MatMulCpu(
            {.x = q, .x_stride = a.heads * qk, .w = &k_matrix, .y = scores.data(), .m = rows},
            pool);
        if (!status.ok()) return status;
        pool.ParallelFor(rows, 8, [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) {
            float* row = &scores[i * visible];
            const int64_t n = seq.start + q0 + i + 1;
            float max_score = -std::numeric_limits<float>::infinity();
            for (int64_t t = 0; t < n; ++t)
              max_score = std::max(max_score, row[t] * a.softmax_scale);
            float sum = 0.0f;
            for (int64_t t = 0; t < n; ++t)
              sum += (row[t] = std::exp(row[t] * a.softmax_scale - max_score));
            const float inv = 1.0f / sum;
            for (int64_t t = 0; t < n; ++t) row[t] *= inv;
            std::fill(row + n, row + visible, 0.0f);
          }
        });
        // Rows of V^T are [v_dim, total_keys]; only the first `visible` columns matter.
        const WeightMatrix v_matrix{
            .dtype = DType::kF32, .data = values_t.data(), .rows = a.v_dim, .cols = visible};
        std::vector<float> v_compact;
        const WeightMatrix* v_use = &v_matrix;
        WeightMatrix v_compact_matrix;
        if (visible != total_keys) {
          v_compact.resize(a.v_dim * visible);
          for (int32_t d = 0; d < a.v_dim; ++d) {
            std::copy_n(&values_t[d * total_keys], visible, &v_compact[d * visible]);
          }
          v_compact_matrix = {
              .dtype = DType::kF32, .data = v_compact.data(), .rows = a.v_dim, .cols = visible};
          v_use = &v_compact_matrix;
        }
        float* out = a.out + ((seq.query_row + q0) * a.heads + h) * a.v_dim;
        status = MatMulCpu({.x = scores.data(),
                            .x_stride = visible,
                            .w = v_use,
                            .y = out,
                            .y_stride = a.heads * a.v_dim,
                            .m = rows},
                           pool);
        if (!status.ok()) return status;
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace xpd::kernels
