#include "common/client/generation_stream.h"

#include <utility>

#include "common/rpc/status_conversion.h"

namespace xpd::client {

GenerationStream::GenerationStream(xpd::v1::Generation::Stub* stub,
                                   xpd::v1::GenerateRequest request, const ClientOptions& options,
                                   absl::Time deadline)
    : stub_(stub), request_(std::move(request)), options_(options), deadline_(deadline) {
  StartAttempt();  // the call is under way before the first Next
}

GenerationStream::~GenerationStream() {
  Cancel();
  if (reader_ != nullptr) {
    // Still running: drain and finish so gRPC releases the call cleanly.
    xpd::v1::GenerateResponse ignored;
    while (reader_->Read(&ignored)) {
    }
    reader_->Finish().IgnoreError();
  }
}

void GenerationStream::StartAttempt() {
  grpc::ClientContext* context;
  {
    absl::MutexLock lock(&mu_);
    if (cancelled_) return;  // Next reports CANCELLED
    context_ = std::make_unique<grpc::ClientContext>();
    if (deadline_ != absl::InfiniteFuture()) context_->set_deadline(absl::ToChronoTime(deadline_));
    context = context_.get();
  }
  // Outside mu_: starting the call may wait for the connection, and Cancel
  // must be able to interrupt it (TryCancel before the call starts sticks).
  reader_ = stub_->Generate(context, request_);
}

bool GenerationStream::Next(xpd::v1::GenerateResponse* response) {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (ended_) return false;
      if (reader_ == nullptr) {  // cancelled before an attempt started
        End(absl::CancelledError("generation cancelled by the client"));
        return false;
      }
    }
    if (reader_->Read(response)) {
      received_any_ = true;
      return true;
    }
    const grpc::Status status = reader_->Finish();
    reader_.reset();
    {
      absl::MutexLock lock(&mu_);
      if (!ShouldRetry(status)) {
        End(status.ok() || !cancelled_
                ? rpc::ToAbslStatus(status)
                : absl::CancelledError("generation cancelled by the client"));
        return false;
      }
      // Back off (Cancel wakes us), then try again within the same deadline.
      mu_.AwaitWithTimeout(absl::Condition(&cancelled_), RetryBackoff(options_, retries_));
    }
    StartAttempt();
  }
}

bool GenerationStream::ShouldRetry(const grpc::Status& status) {
  if (status.error_code() != grpc::StatusCode::UNAVAILABLE || received_any_ || cancelled_ ||
      retries_ >= options_.max_retries) {
    return false;
  }
  ++retries_;
  return absl::Now() + RetryBackoff(options_, retries_) < deadline_;
}

void GenerationStream::End(absl::Status status) {
  ended_ = true;
  status_ = std::move(status);
}

absl::Status GenerationStream::Finish() {
  {
    absl::MutexLock lock(&mu_);
    if (ended_) return status_;
  }
  // Not drained yet: read to the end, dropping the rest.
  xpd::v1::GenerateResponse ignored;
  while (Next(&ignored)) {
  }
  absl::MutexLock lock(&mu_);
  return status_;
}

void GenerationStream::Cancel() {
  absl::MutexLock lock(&mu_);
  if (ended_ || cancelled_) return;
  cancelled_ = true;
  if (context_ != nullptr) context_->TryCancel();
}

}  // namespace xpd::client
