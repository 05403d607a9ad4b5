// Splitting a KvPayload into chunks of whole tokens, shared by the KV
// transports: a chunk carries tokens [first, first + count) of every layer,
// layout [num_layers][count][latent_dim].
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "common/transport/kv_transport.h"

namespace xpd::transport {

inline constexpr int64_t kDefaultKvChunkBytes = int64_t{1} << 20;

// INVALID_ARGUMENT naming the field when the shape is bad or disagrees with
// the data size.
absl::Status ValidateKvPayload(const KvPayload& payload);

// Tokens per chunk so that a chunk's rows fit in `chunk_bytes` (at least one).
int64_t TokensPerChunk(const KvPayload& payload, int64_t chunk_bytes);

// Copies the rows of tokens [first_token, first_token + count) of every layer
// to `out` (room for num_layers * count * latent_dim floats; any alignment).
void GatherTokenRows(const KvPayload& payload, int64_t first_token, int64_t count, void* out);

}  // namespace xpd::transport
