// Moves one request's latent KV cache from a prefill rank to a decode rank.
// The engine only sees this interface; implementations: in-process (tests,
// single-process deployments) and gRPC streaming (KvTransfer.PushKv), with
// NCCL for GPU ranks later.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace xpd::transport {

// Latent rows of one request: float32 [num_layers][num_tokens][latent_dim].
struct KvPayload {
  int32_t num_layers = 0;
  int32_t latent_dim = 0;
  int64_t num_tokens = 0;
  std::span<const float> data;
};

// The receiving side (a decode rank): takes the rows of tokens
// [first_token, first_token + count) for every layer, layout
// [num_layers][count][latent_dim]. Errors: NOT_FOUND (no reservation),
// INVALID_ARGUMENT (shape mismatch).
class KvSink {
 public:
  virtual ~KvSink() = default;
  virtual absl::Status WriteKv(const std::string& request_id, int64_t first_token, int64_t count,
                               int32_t num_layers, int32_t latent_dim,
                               std::span<const float> rows) = 0;
  // All num_tokens rows have arrived.
  virtual absl::Status CompleteKv(const std::string& request_id, int64_t num_tokens) = 0;
};

class KvTransport {
 public:
  virtual ~KvTransport() = default;
  // Sends the payload to the decode rank at `address` and returns the bytes
  // sent once it acknowledged. UNAVAILABLE (naming the address) when the rank
  // is gone; DEADLINE_EXCEEDED past `deadline`.
  virtual absl::StatusOr<int64_t> Send(const std::string& address, const std::string& request_id,
                                       const KvPayload& payload, absl::Time deadline) = 0;
};

}  // namespace xpd::transport
