#include "common/transport/kv_chunking.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace xpd::transport {

absl::Status ValidateKvPayload(const KvPayload& payload) {
  if (payload.num_layers <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_layers: must be > 0, got ", payload.num_layers));
  }
  if (payload.latent_dim <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("latent_dim: must be > 0, got ", payload.latent_dim));
  }
  if (payload.num_tokens < 0 || payload.num_tokens > INT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_tokens: must be in [0, 2^31), got ", payload.num_tokens));
  }
  const int64_t expected = int64_t{payload.num_layers} * payload.num_tokens * payload.latent_dim;
  if (static_cast<int64_t>(payload.data.size()) != expected) {
    return absl::InvalidArgumentError(absl::StrCat("data: ", payload.data.size(),
                                                   " floats, expected num_layers*num_tokens*"
                                                   "latent_dim = ",
                                                   expected));
  }
  return absl::OkStatus();
}

int64_t TokensPerChunk(const KvPayload& payload, int64_t chunk_bytes) {
  const int64_t token_bytes =
      int64_t{payload.num_layers} * payload.latent_dim * static_cast<int64_t>(sizeof(float));
  return std::max<int64_t>(1, chunk_bytes / std::max<int64_t>(1, token_bytes));
}

void GatherTokenRows(const KvPayload& payload, int64_t first_token, int64_t count, void* out) {
  const int64_t dim = payload.latent_dim;
  const size_t layer_bytes = count * dim * sizeof(float);
  char* dst = static_cast<char*>(out);
  for (int64_t layer = 0; layer < payload.num_layers; ++layer) {
    const float* src = payload.data.data() + (layer * payload.num_tokens + first_token) * dim;
    std::memcpy(dst + layer * layer_bytes, src, layer_bytes);
  }
}

}  // namespace xpd::transport
