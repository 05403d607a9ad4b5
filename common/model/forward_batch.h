// What one forward step computes: for each sequence, its new tokens at
// consecutive positions starting at `start`, written into and attending over
// the sequence's pages of the latent KV cache.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/attention/paged_latent_cache.h"

namespace xpd::model {

enum class LogitsRows : uint8_t { kNone, kLast, kAll };

// kAuto: MHA form for sequences with several new tokens (compute bound),
// absorbed latent form for single-token decode (memory bound).
enum class AttentionForm : uint8_t { kAuto, kMha, kLatent };

struct SequenceStep {
  std::span<const int32_t> tokens;       // new tokens
  int64_t start = 0;                     // position of tokens[0]; cache holds [0, start)
  std::span<const int32_t> block_table;  // covers positions [0, start + tokens.size())
  LogitsRows logits = LogitsRows::kLast;
};

struct ForwardBatch {
  std::vector<SequenceStep> sequences;
  AttentionForm attention = AttentionForm::kAuto;
};

// Per MoE layer routing decisions, for tests and load statistics.
struct RoutingTrace {
  // [moe_layer][token row][k]
  std::vector<std::vector<int32_t>> expert_ids;
  std::vector<std::vector<float>> expert_weights;
};

struct ForwardOutput {
  // Rows in sequence order; for each sequence, the rows its LogitsRows asked for.
  std::vector<float> logits;       // [num_rows, vocab]
  std::vector<float> hidden;       // [num_rows, hidden]: post final norm (the MTP input)
  std::vector<int64_t> first_row;  // per sequence: index of its first output row
  int64_t num_rows = 0;
  RoutingTrace* routing = nullptr;  // filled when set by the caller
};

}  // namespace xpd::model
