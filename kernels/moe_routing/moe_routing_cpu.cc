// Reference (oracle) implementation of DeepSeek-V3 grouped top-k routing; see
// moe_routing.h and spec §3.7.2. Written for clarity, not speed: every other
// backend is checked against it, so each step mirrors the spec one to one.

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "kernels/moe_routing/moe_routing.h"

namespace xpd::kernels {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

std::string Str(int64_t v) { return std::to_string(v); }

float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// A NaN would break the ordering the top-k below relies on; rank it last.
float RankKey(float v) { return std::isnan(v) ? kNegInf : v; }

// Writes the indices of the k largest scores to out[0..k), largest first.
// Indices are visited in increasing order and a newcomer must be strictly
// greater to move ahead of an entry, which yields "ties -> lower index".
// O(n*k): fine for n = 256, k <= 8. Requires k <= n and no NaN in scores.
void TopK(const float* score, int32_t n, int32_t k, int32_t* out) {
  int32_t filled = 0;
  for (int32_t i = 0; i < n; ++i) {
    const float v = score[i];
    if (filled == k && !(v > score[out[k - 1]])) continue;
    int32_t pos = filled < k ? filled++ : k - 1;
    while (pos > 0 && v > score[out[pos - 1]]) {
      out[pos] = out[pos - 1];
      --pos;
    }
    out[pos] = i;
  }
}

// Sum of the two largest biased scores (spec step 4); a one-expert group
// scores its only expert.
float GroupScore(const float* biased, int32_t size) {
  if (size == 1) return biased[0];
  int32_t best[2];
  TopK(biased, size, 2, best);
  return RankKey(biased[best[0]] + biased[best[1]]);  // -inf + +inf would be NaN
}

}  // namespace

absl::Status ValidateMoeRoutingArgs(const MoeRoutingArgs& args) {
  if (args.num_tokens < 0) {
    return absl::InvalidArgumentError("num_tokens must be >= 0, got " + Str(args.num_tokens));
  }
  if (args.bias == nullptr) return absl::InvalidArgumentError("bias must not be null");
  // Token buffers may be null only when there are no tokens (empty batches
  // often come with empty vectors whose data() is null).
  if (args.num_tokens > 0) {
    if (args.logits == nullptr) return absl::InvalidArgumentError("logits must not be null");
    if (args.expert_ids == nullptr) {
      return absl::InvalidArgumentError("expert_ids must not be null");
    }
    if (args.expert_weights == nullptr) {
      return absl::InvalidArgumentError("expert_weights must not be null");
    }
  }
  if (args.num_experts <= 0) {
    return absl::InvalidArgumentError("num_experts must be > 0, got " + Str(args.num_experts));
  }
  if (args.num_groups <= 0) {
    return absl::InvalidArgumentError("num_groups must be > 0, got " + Str(args.num_groups));
  }
  if (args.num_experts % args.num_groups != 0) {
    return absl::InvalidArgumentError("num_experts (" + Str(args.num_experts) +
                                      ") must be divisible by num_groups (" + Str(args.num_groups) +
                                      ")");
  }
  if (args.top_groups <= 0 || args.top_groups > args.num_groups) {
    return absl::InvalidArgumentError("top_groups must be in [1, num_groups=" +
                                      Str(args.num_groups) + "], got " + Str(args.top_groups));
  }
  const int64_t kept_experts =
      static_cast<int64_t>(args.top_groups) * (args.num_experts / args.num_groups);
  if (args.top_k <= 0 || args.top_k > kept_experts) {
    return absl::InvalidArgumentError("top_k must be in [1, " + Str(kept_experts) +
                                      "] (experts in the kept groups), got " + Str(args.top_k));
  }
  return absl::OkStatus();
}

absl::Status MoeRoutingCpu(const MoeRoutingArgs& args) {
  if (absl::Status status = ValidateMoeRoutingArgs(args); !status.ok()) return status;

  const int32_t num_experts = args.num_experts;
  const int32_t num_groups = args.num_groups;
  const int32_t group_size = num_experts / num_groups;
  const int32_t top_k = args.top_k;

  std::vector<float> scores(num_experts);  // s: unbiased sigmoid, the weights' source
  std::vector<float> biased(num_experts);  // b = s + bias: selection only
  std::vector<float> group_scores(num_groups);
  std::vector<int32_t> kept_groups(args.top_groups);
  std::vector<bool> group_kept(num_groups);
  std::vector<int32_t> chosen(top_k);

  for (int64_t t = 0; t < args.num_tokens; ++t) {
    const float* logits = args.logits + t * num_experts;
    for (int32_t e = 0; e < num_experts; ++e) {
      scores[e] = Sigmoid(logits[e]);
      biased[e] = RankKey(scores[e] + args.bias[e]);
    }

    for (int32_t g = 0; g < num_groups; ++g) {
      group_scores[g] = GroupScore(&biased[g * group_size], group_size);
    }
    TopK(group_scores.data(), num_groups, args.top_groups, kept_groups.data());
    group_kept.assign(num_groups, false);
    for (int32_t g : kept_groups) group_kept[g] = true;
    // -inf, not 0 (HF's approximation): excluded experts can never win.
    for (int32_t e = 0; e < num_experts; ++e) {
      if (!group_kept[e / group_size]) biased[e] = kNegInf;
    }

    TopK(biased.data(), num_experts, top_k, chosen.data());

    float sum = 0.0f;
    for (int32_t e : chosen) sum += scores[e];
    // The 1e-20 (as in HF) only matters when every chosen score underflowed
    // to 0; it turns 0/0 into 0 instead of NaN.
    const float denom = args.normalize ? sum + 1e-20f : 1.0f;
    int32_t* ids_out = args.expert_ids + t * top_k;
    float* weights_out = args.expert_weights + t * top_k;
    for (int32_t j = 0; j < top_k; ++j) {
      ids_out[j] = chosen[j];
      weights_out[j] = scores[chosen[j]] / denom * args.scale;  // normalize, then scale
    }
  }
  return absl::OkStatus();
}

}  // namespace xpd::kernels
