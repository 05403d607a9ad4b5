#include "common/client/client_options.h"

#include <algorithm>
#include <cmath>

#include "absl/time/clock.h"

namespace xpd::client {

absl::Time CallDeadline(const ClientOptions& options, const CallOptions& call) {
  const absl::Duration timeout =
      call.timeout == absl::ZeroDuration() ? options.default_timeout : call.timeout;
  return timeout == absl::InfiniteDuration() ? absl::InfiniteFuture() : absl::Now() + timeout;
}

absl::Duration RetryBackoff(const ClientOptions& options, int retry) {
  const double factor = std::pow(std::max(1.0, options.backoff_multiplier), std::max(0, retry - 1));
  const absl::Duration backoff =
      absl::Seconds(absl::ToDoubleSeconds(options.initial_backoff) * factor);
  return std::min(backoff, options.max_backoff);
}

}  // namespace xpd::client
