// Options of the xpd C++ client SDK: per-call deadlines and retries of
// UNAVAILABLE with exponential backoff.
#pragma once

#include "absl/time/time.h"

namespace xpd::client {

struct ClientOptions {
  // Deadline of a call that does not set its own; InfiniteDuration() = none.
  absl::Duration default_timeout = absl::Minutes(10);
  // Retries of a call that failed with UNAVAILABLE before any response
  // arrived (a stream that has produced tokens is never retried).
  int max_retries = 3;
  absl::Duration initial_backoff = absl::Milliseconds(100);
  absl::Duration max_backoff = absl::Seconds(5);
  double backoff_multiplier = 2.0;
  int max_message_bytes = 64 << 20;
};

struct CallOptions {
  // ZeroDuration() = ClientOptions::default_timeout; InfiniteDuration() = none.
  // The deadline covers every attempt, backoff included.
  absl::Duration timeout = absl::ZeroDuration();
};

// When a call started now must end.
absl::Time CallDeadline(const ClientOptions& options, const CallOptions& call);

// The wait before retry number `retry` (1-based): initial_backoff *
// backoff_multiplier^(retry-1), capped at max_backoff.
absl::Duration RetryBackoff(const ClientOptions& options, int retry);

}  // namespace xpd::client
