// Dispatch/combine of one MoE layer across an expert-parallel group. Each
// rank routes its own tokens; the exchange sends every token's hidden state
// to the ranks owning its top-k experts, has them computed there, and sums
// the weighted results back on the token's home rank in the token's top-k
// order, so the result never depends on arrival order or on which replica
// served it. Implementations: local (a group of one rank holding every
// expert), and later gRPC and NCCL all-to-all. The engine never knows which.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <vector>

#include "absl/status/status.h"

namespace xpd::transport {

// Rows that one expert computes: out[r] = Expert(in[r]).
struct ExpertBatch {
  int32_t expert = 0;
  const float* in = nullptr;  // [rows, hidden]
  float* out = nullptr;       // [rows, hidden]
  int64_t rows = 0;
};

// Runs the experts this rank holds over the given batches (one call per layer
// and exchange round, so the backend can group the products).
using ExpertCompute = std::function<absl::Status(std::span<const ExpertBatch> batches)>;

struct MoeExchangeArgs {
  int32_t layer = 0;
  int64_t rows = 0;  // this rank's tokens
  int64_t hidden = 0;
  int32_t top_k = 0;
  const float* x = nullptr;             // [rows, hidden]
  const int32_t* expert_ids = nullptr;  // [rows, top_k] logical experts
  const float* weights = nullptr;       // [rows, top_k]
  float* out = nullptr;                 // [rows, hidden]: sum_k weights[k] * expert_k(x)
};

// out[r] = sum over k < top_k of weights[r * top_k + k] * slot_out[r * top_k + k],
// summed from zero in k order for every element: the combine step of every
// exchange, so a token's result is the same whichever exchange served it.
void CombineExpertOutputs(int64_t rows, int32_t top_k, int64_t hidden, const float* weights,
                          const float* const* slot_out, float* out);

class ExpertExchange {
 public:
  virtual ~ExpertExchange() = default;
  // Every rank of the group calls this for every MoE layer of every step,
  // with zero rows if it has no tokens (so no rank waits on an absent peer).
  virtual absl::Status DispatchCombine(const MoeExchangeArgs& args,
                                       const ExpertCompute& compute_local) = 0;
};

// A group of one rank: every routed expert is local.
class LocalExpertExchange final : public ExpertExchange {
 public:
  absl::Status DispatchCombine(const MoeExchangeArgs& args,
                               const ExpertCompute& compute_local) override;

 private:
  // The gathered expert inputs and outputs, kept between layers: a prefill
  // layer moves tens of MB through them, and fresh buffers would cost page
  // faults and zero-filling on every layer.
  std::mutex mu_;
  std::vector<float> gathered_;
  std::vector<float> computed_;
};

}  // namespace xpd::transport
