// DeepSeek-V3 grouped top-k routing ("noaux_tc"): sigmoid(logits) + bias ranks
// groups by the sum of their best two biased scores, keeps `top_groups` groups,
// picks `top_k` experts inside them by biased score, then takes the chosen
// experts' unbiased scores, divides by their sum (when `normalize`) and
// multiplies by `scale`.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

struct CUstream_st;  // cudaStream_t; declared here so CPU-only builds need no CUDA headers.

namespace xpd::kernels {

struct MoeRoutingArgs {
  const float* logits = nullptr;    // [num_tokens, num_experts] router logits (f32)
  const float* bias = nullptr;      // [num_experts] e_score_correction_bias; selection only
  int32_t* expert_ids = nullptr;    // [num_tokens, top_k] out, descending biased score
  float* expert_weights = nullptr;  // [num_tokens, top_k] out, same order as expert_ids
  int32_t num_tokens = 0;
  int32_t num_experts = 256;
  int32_t num_groups = 8;
  int32_t top_groups = 4;
  int32_t top_k = 8;
  float scale = 2.5f;
  bool normalize = true;  // norm_topk_prob
};

absl::Status ValidateMoeRoutingArgs(const MoeRoutingArgs& args);

// Reference: plain and single-threaded; the oracle for every other backend.
// Excluded groups are masked with -inf (exact reference behaviour); ties break
// toward the lower index.
absl::Status MoeRoutingCpu(const MoeRoutingArgs& args);

}  // namespace xpd::kernels
