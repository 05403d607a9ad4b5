#include "common/transport/in_process_kv_transport.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/base/status_macros.h"

namespace xpd::transport {

InProcessKvTransport::InProcessKvTransport(int64_t chunk_bytes)
    : chunk_bytes_(std::max<int64_t>(1, chunk_bytes)) {}

void InProcessKvTransport::Register(const std::string& address, KvSink* sink) {
  absl::WriterMutexLock lock(&mu_);
  sinks_[address] = sink;
}

void InProcessKvTransport::Unregister(const std::string& address) {
  absl::WriterMutexLock lock(&mu_);
  sinks_.erase(address);
}

absl::StatusOr<int64_t> InProcessKvTransport::Send(const std::string& address,
                                                   const std::string& request_id,
                                                   const KvPayload& payload, absl::Time deadline) {
  if (request_id.empty()) return absl::InvalidArgumentError("request_id: must not be empty");
  XPD_RETURN_IF_ERROR(ValidateKvPayload(payload));
  absl::ReaderMutexLock lock(&mu_);  // the sink stays registered during the Send
  auto it = sinks_.find(address);
  if (it == sinks_.end()) {
    return absl::UnavailableError(absl::StrCat("decode rank at ", address, " is unavailable"));
  }
  KvSink* sink = it->second;
  const auto with_context = [&](const absl::Status& status) {
    return absl::Status(status.code(),
                        absl::StrCat("KV transfer to ", address, ": ", status.message()));
  };

  const int64_t tokens_per_chunk = TokensPerChunk(payload, chunk_bytes_);
  std::vector<float> rows;
  for (int64_t first = 0; first < payload.num_tokens; first += tokens_per_chunk) {
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("KV transfer to ", address,
                                                      ": deadline exceeded after ", first, " of ",
                                                      payload.num_tokens, " tokens"));
    }
    const int64_t count = std::min(tokens_per_chunk, payload.num_tokens - first);
    rows.resize(payload.num_layers * count * payload.latent_dim);
    GatherTokenRows(payload, first, count, rows.data());
    if (absl::Status status =
            sink->WriteKv(request_id, first, count, payload.num_layers, payload.latent_dim, rows);
        !status.ok()) {
      return with_context(status);
    }
  }
  if (absl::Status status = sink->CompleteKv(request_id, payload.num_tokens); !status.ok()) {
    return with_context(status);
  }
  return static_cast<int64_t>(payload.data.size() * sizeof(float));
}

}  // namespace xpd::transport
