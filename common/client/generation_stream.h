// A running Generation.Generate call: read responses one by one, cancel from
// any thread. UNAVAILABLE before the first response is retried with backoff
// (ClientOptions); once a response has arrived, errors are final.
#pragma once

#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/client/client_options.h"
#include "grpcpp/grpcpp.h"
#include "xpd/v1/generation.grpc.pb.h"

namespace xpd::client {

class GenerationStream {
 public:
  GenerationStream(const GenerationStream&) = delete;
  GenerationStream& operator=(const GenerationStream&) = delete;
  ~GenerationStream();  // cancels a call that is still running

  // Blocks for the next response; false once the stream has ended, then
  // Finish() tells how. Call from one thread at a time.
  bool Next(xpd::v1::GenerateResponse* response);
  // After Next returned false: OK when the stream completed, otherwise the
  // call's status (CANCELLED, DEADLINE_EXCEEDED, UNAVAILABLE, ...).
  absl::Status Finish();
  // Cancels the call (thread-safe, idempotent): a blocked Next returns false
  // and Finish() is CANCELLED, unless the stream had already ended.
  void Cancel();

 private:
  friend class GenerationClient;
  GenerationStream(xpd::v1::Generation::Stub* stub, xpd::v1::GenerateRequest request,
                   const ClientOptions& options, absl::Time deadline);

  void StartAttempt() ABSL_LOCKS_EXCLUDED(mu_);
  // Ends the current attempt; true when it is worth another one.
  bool ShouldRetry(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void End(absl::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  xpd::v1::Generation::Stub* const stub_;
  const xpd::v1::GenerateRequest request_;
  const ClientOptions options_;
  const absl::Time deadline_;

  absl::Mutex mu_;
  std::unique_ptr<grpc::ClientContext> context_ ABSL_GUARDED_BY(mu_);
  // The running attempt (null once finished). Used outside mu_ by Next, the
  // only thread that replaces it.
  std::unique_ptr<grpc::ClientReader<xpd::v1::GenerateResponse>> reader_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  int retries_ ABSL_GUARDED_BY(mu_) = 0;
  bool received_any_ = false;  // Next's thread only
};

}  // namespace xpd::client
