#include "kernels/attention/mha_attention_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <vector>

#include "kernels/attention/vector_math.h"
#include "kernels/core/simd_transpose.h"
#include "kernels/matmul/matmul.h"

namespace xpd::kernels {
namespace {

constexpr int64_t kQueryBlock = 128;

// One thread's buffers, reused across its (sequence, head) tasks and calls.
struct HeadScratch {
  std::vector<float> keys, values, scores;
};

// Dims [0, dims) of 8 consecutive keys (rows `stride` apart) into a key
// tile at their first lane: dim d of the 8 keys lands contiguously at
// dst[d * 32]. The ragged end of dims goes one value at a time.
void TransposeRows(const float* src, int64_t stride, int64_t dims, float* dst) {
  constexpr int64_t kTile = kPackedTileRows;
  int64_t d = 0;
  for (; d + 8 <= dims; d += 8) {
    __m256 r[8];
    for (int j = 0; j < 8; ++j) r[j] = _mm256_loadu_ps(src + j * stride + d);
    Transpose8x8(r);
    for (int i = 0; i < 8; ++i) _mm256_storeu_ps(dst + (d + i) * kTile, r[i]);
  }
  for (; d < dims; ++d) {
    for (int j = 0; j < 8; ++j) dst[d * kTile + j] = src[j * stride + d];
  }
}

// Attention of one head of one sequence, on the calling thread (`solo` has
// one thread: the matmuls' results never depend on the thread count). K and V
// are laid out as packed F32 tiles (WeightLayout::kF32Tiles32), so that both
// products run on the packed kernels: lanes over keys (or value dims), no
// horizontal sums over the short head dimension.
absl::Status RunHead(const MhaAttentionArgs& a, const AttentionSequence& seq, int32_t h,
                     ThreadPool& solo, HeadScratch& s) {
  constexpr int64_t kTile = kPackedTileRows;
  const int64_t qk = a.nope_dim + a.rope_dim, kv_width = a.nope_dim + a.v_dim;
  const int64_t total_keys = seq.start + seq.num_queries;
  const int64_t key_tiles = (total_keys + kTile - 1) / kTile;
  const int64_t value_tiles = (a.v_dim + kTile - 1) / kTile;
  // K_h = [k_nope | k_pe] as tiles of 32 keys; V_h as tiles of 32 value dims
  // over every key (W rows = value dims, k = keys), each [total_keys][32].
  // Every lane is written below except the padding of the last key tile and
  // value tile: zero just those, so the kernels' (never stored) padding
  // outputs stay finite.
  s.keys.resize(key_tiles * qk * kTile);
  s.values.resize(value_tiles * total_keys * kTile);
  if (const int64_t used = total_keys % kTile; used != 0) {
    float* last = &s.keys[(key_tiles - 1) * qk * kTile];
    for (int64_t d = 0; d < qk; ++d)
      std::fill(last + d * kTile + used, last + (d + 1) * kTile, 0.0f);
  }
  if (const int64_t used = a.v_dim % kTile; used != 0) {
    float* last = &s.values[(value_tiles - 1) * total_keys * kTile];
    for (int64_t t = 0; t < total_keys; ++t) {
      std::fill(last + t * kTile + used, last + (t + 1) * kTile, 0.0f);
    }
  }
  const int64_t kv_stride = a.heads * kv_width;
  int64_t t = 0;
  for (; t + 8 <= total_keys; t += 8) {  // 8 keys at a time, always inside one tile
    float* key = &s.keys[(t / kTile) * qk * kTile + t % kTile];
    TransposeRows(seq.kv + (t * a.heads + h) * kv_width, kv_stride, a.nope_dim, key);
    TransposeRows(seq.k_pe + t * seq.k_pe_stride, seq.k_pe_stride, a.rope_dim,
                  key + a.nope_dim * kTile);
  }
  for (; t < total_keys; ++t) {
    const float* kv = seq.kv + (t * a.heads + h) * kv_width;
    const float* pe = seq.k_pe + t * seq.k_pe_stride;
    float* key = &s.keys[(t / kTile) * qk * kTile + t % kTile];
    for (int32_t d = 0; d < a.nope_dim; ++d) key[d * kTile] = kv[d];
    for (int32_t d = 0; d < a.rope_dim; ++d) key[(a.nope_dim + d) * kTile] = pe[d];
  }
  // A key's values are one run of up to 32 dims per value tile.
  for (int64_t vt = 0; vt < value_tiles; ++vt) {
    const int64_t dims = std::min<int64_t>(kTile, a.v_dim - vt * kTile);
    const float* src = seq.kv + h * kv_width + a.nope_dim + vt * kTile;
    float* dst = &s.values[vt * total_keys * kTile];
    for (int64_t key = 0; key < total_keys; ++key) {
      std::memcpy(dst + key * kTile, src + key * kv_stride, dims * sizeof(float));
    }
  }
  for (int64_t q0 = 0; q0 < seq.num_queries; q0 += kQueryBlock) {
    const int64_t rows = std::min<int64_t>(kQueryBlock, seq.num_queries - q0);
    const int64_t visible = seq.start + q0 + rows;  // keys the block's last query sees
    s.scores.resize(rows * visible);
    const WeightMatrix k_matrix{.dtype = DType::kF32,
                                .layout = WeightLayout::kF32Tiles32,
                                .data = s.keys.data(),
                                .rows = visible,
                                .cols = qk};
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
    // One product per value tile: a tile's first `visible` lines are the
    // keys this block sees.
    float* out = a.out + ((seq.query_row + q0) * a.heads + h) * a.v_dim;
    for (int64_t vt = 0; vt < value_tiles; ++vt) {
      const WeightMatrix v_matrix{.dtype = DType::kF32,
                                  .layout = WeightLayout::kF32Tiles32,
                                  .data = &s.values[vt * total_keys * kTile],
                                  .rows = std::min<int64_t>(kTile, a.v_dim - vt * kTile),
                                  .cols = visible};
      status = MatMulCpu({.x = s.scores.data(),
                          .x_stride = visible,
                          .w = &v_matrix,
                          .y = out + vt * kTile,
                          .y_stride = a.heads * a.v_dim,
                          .m = rows},
                         solo);
      if (!status.ok()) return status;
    }
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
  // One task per (sequence, head), whole on one thread, claimed by whichever
  // thread is free: no fork-join per matmul and softmax (a 512-token prompt
  // had ~200 parallel regions per layer), and sequences of different lengths
  // still split evenly.
  const int64_t tasks = static_cast<int64_t>(a.sequences.size()) * a.heads;
  std::mutex mutex;
  absl::Status first_error;
  pool.ParallelForDynamic(tasks, 1, [&](int64_t begin, int64_t end) {
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
