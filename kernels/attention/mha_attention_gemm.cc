#include "kernels/attention/mha_attention_gemm.h"

#include <algorithm>
#include <mutex>
#include <vector>

#include "kernels/attention/vector_math.h"
#include "kernels/matmul/matmul.h"

namespace xpd::kernels {
namespace {

constexpr int64_t kQueryBlock = 128;

// One thread's buffers, reused across its (sequence, head) tasks and calls.
struct HeadScratch {
  std::vector<float> keys, values_t, v_compact, scores;
};

// Attention of one head of one sequence, on the calling thread (`solo` has
// one thread: the matmuls' results never depend on the thread count).
absl::Status RunHead(const MhaAttentionArgs& a, const AttentionSequence& seq, int32_t h,
                     ThreadPool& solo, HeadScratch& s) {
  const int64_t qk = a.nope_dim + a.rope_dim, kv_width = a.nope_dim + a.v_dim;
  const int64_t total_keys = seq.start + seq.num_queries;
  // K_h = [k_nope | k_pe] rows, and V_h^T so that P V is an x * W^T product.
  s.keys.resize(total_keys * qk);
  s.values_t.resize(a.v_dim * total_keys);
  for (int64_t t = 0; t < total_keys; ++t) {
    const float* kv = seq.kv + (t * a.heads + h) * kv_width;
    std::copy_n(kv, a.nope_dim, &s.keys[t * qk]);
    std::copy_n(seq.k_pe + t * seq.k_pe_stride, a.rope_dim, &s.keys[t * qk + a.nope_dim]);
    for (int32_t d = 0; d < a.v_dim; ++d) s.values_t[d * total_keys + t] = kv[a.nope_dim + d];
  }
  for (int64_t q0 = 0; q0 < seq.num_queries; q0 += kQueryBlock) {
    const int64_t rows = std::min<int64_t>(kQueryBlock, seq.num_queries - q0);
    const int64_t visible = seq.start + q0 + rows;  // keys the block's last query sees
    s.scores.resize(rows * visible);
    const WeightMatrix k_matrix{
        .dtype = DType::kF32, .data = s.keys.data(), .rows = visible, .cols = qk};
    const float* q = a.q + ((seq.query_row + q0) * a.heads + h) * qk;
    absl::Status status = MatMulCpu(
        {.x = q, .x_stride = a.heads * qk, .w = &k_matrix, .y = s.scores.data(), .m = rows}, solo);
    if (!status.ok()) return status;
    for (int64_t i = 0; i < rows; ++i) {
      float* row = &s.scores[i * visible];
      const int64_t n = seq.start + q0 + i + 1;
      internal::Scale(a.softmax_scale, row, n);
      internal::SoftmaxInPlace(row, n);
      std::fill(row + n, row + visible, 0.0f);
    }
    // Rows of V^T are [v_dim, total_keys]; only the first `visible` columns matter.
    WeightMatrix v_matrix{
        .dtype = DType::kF32, .data = s.values_t.data(), .rows = a.v_dim, .cols = visible};
    if (visible != total_keys) {
      s.v_compact.resize(a.v_dim * visible);
      for (int32_t d = 0; d < a.v_dim; ++d) {
        std::copy_n(&s.values_t[d * total_keys], visible, &s.v_compact[d * visible]);
      }
      v_matrix.data = s.v_compact.data();
    }
    float* out = a.out + ((seq.query_row + q0) * a.heads + h) * a.v_dim;
    status = MatMulCpu({.x = s.scores.data(),
                        .x_stride = visible,
                        .w = &v_matrix,
                        .y = out,
                        .y_stride = a.heads * a.v_dim,
                        .m = rows},
                       solo);
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status MhaAttentionGemm(const MhaAttentionArgs& a, ThreadPool& pool) {
  if (a.q == nullptr || a.out == nullptr || a.heads <= 0) {
    return absl::InvalidArgumentError("MhaAttentionGemm: bad buffers or dims");
  }
  for (const AttentionSequence& seq : a.sequences) {
    if (seq.kv == nullptr || seq.k_pe == nullptr || seq.num_queries < 0 || seq.start < 0) {
      return absl::InvalidArgumentError("MhaAttentionGemm: sequence without keys");
    }
  }
  // One task per (sequence, head), whole on one thread: heads are independent
  // and equal in cost, so this splits evenly without a fork-join per matmul
  // and softmax (a 512-token prompt had ~200 parallel regions per layer).
  const int64_t tasks = static_cast<int64_t>(a.sequences.size()) * a.heads;
  std::mutex mutex;
  absl::Status first_error;
  pool.ParallelFor(tasks, 1, [&](int64_t begin, int64_t end) {
    thread_local ThreadPool solo(1);
    thread_local HeadScratch scratch;
    for (int64_t task = begin; task < end; ++task) {
      const AttentionSequence& seq = a.sequences[task / a.heads];
      absl::Status status = RunHead(a, seq, static_cast<int32_t>(task % a.heads), solo, scratch);
      if (status.ok()) continue;
      std::lock_guard<std::mutex> lock(mutex);
      if (first_error.ok()) first_error = std::move(status);
    }
  });
  return first_error;
}

}  // namespace xpd::kernels
