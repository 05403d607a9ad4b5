// MHA-form attention for prefill expressed as GEMMs, per (sequence, head)
// and block of queries: scores = Q K^T on the optimized matmul, a causal
// softmax per row, then P V. Same contract and results (to f32 rounding) as
// MhaAttention, several times faster for long prompts.
#pragma once

#include "absl/status/status.h"
#include "kernels/attention/mla_attention.h"
#include "kernels/core/thread_pool.h"

namespace xpd::kernels {

absl::Status MhaAttentionGemm(const MhaAttentionArgs& args, ThreadPool& pool);

}  // namespace xpd::kernels
