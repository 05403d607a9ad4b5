#include "services/router/rank_directory.h"

#include <algorithm>
#include <thread>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"

namespace xpd::router {

RankDirectory::RankDirectory(std::string controller_address, absl::Duration poll_interval)
    : controller_address_(std::move(controller_address)), poll_interval_(poll_interval) {
  stub_ = xpd::v1::Controller::NewStub(
      grpc::CreateChannel(controller_address_, grpc::InsecureChannelCredentials()));
}

RankDirectory::~RankDirectory() {
  {
    absl::MutexLock lock(&mutex_);
    stop_ = true;
  }
  if (thread_) thread_->join();
}

void RankDirectory::Start() {
  thread_ = std::make_unique<std::thread>([this] { PollLoop(); });
}

void RankDirectory::PollLoop() {
  while (true) {
    (void)PollOnce();  // a controller outage keeps the last known ranks
    absl::MutexLock lock(&mutex_);
    const auto stopping = [this]() ABSL_SHARED_LOCKS_REQUIRED(mutex_) { return stop_; };
    if (mutex_.AwaitWithTimeout(absl::Condition(&stopping), poll_interval_)) return;
  }
}

absl::Status RankDirectory::PollOnce() {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  xpd::v1::ListRanksRequest request;
  request.set_healthy_only(true);
  xpd::v1::ListRanksResponse response;
  grpc::Status status = stub_->ListRanks(&context, request, &response);
  if (!status.ok()) {
    return absl::UnavailableError(
        absl::StrCat("controller ", controller_address_, ": ", status.error_message()));
  }
  std::vector<xpd::v1::RankInfo> prefill, decode;
  for (const xpd::v1::RankInfo& rank : response.ranks()) {
    if (rank.role() == xpd::v1::ROLE_PREFILL) prefill.push_back(rank);
    if (rank.role() == xpd::v1::ROLE_DECODE) decode.push_back(rank);
  }
  absl::MutexLock lock(&mutex_);
  prefill_ = std::move(prefill);
  decode_ = std::move(decode);
  return absl::OkStatus();
}

absl::Status RankDirectory::WaitForRanks(int prefill, int decode, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::MutexLock lock(&mutex_);
  const auto enough = [&]() ABSL_SHARED_LOCKS_REQUIRED(mutex_) {
    return static_cast<int>(prefill_.size()) >= prefill &&
           static_cast<int>(decode_.size()) >= decode;
  };
  if (mutex_.AwaitWithDeadline(absl::Condition(&enough), deadline)) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat("waited for ", prefill, " prefill and ", decode,
                                             " decode ranks; the controller lists ",
                                             prefill_.size(), " and ", decode_.size()));
}

absl::StatusOr<RankChoice> RankDirectory::PickPrefill(int64_t prompt_tokens) {
  absl::MutexLock lock(&mutex_);
  if (prefill_.empty()) return absl::UnavailableError("no healthy prefill rank");
  auto best = std::min_element(prefill_.begin(), prefill_.end(), [](const auto& a, const auto& b) {
    return a.load().outstanding_prefill_tokens() < b.load().outstanding_prefill_tokens();
  });
  best->mutable_load()->set_outstanding_prefill_tokens(best->load().outstanding_prefill_tokens() +
                                                       prompt_tokens);
  return RankChoice{best->rank_id(), best->address()};
}

int64_t RankDirectory::MaxDecodeKvBlocks() {
  absl::MutexLock lock(&mutex_);
  int64_t blocks = 0;
  for (const xpd::v1::RankInfo& rank : decode_) {
    blocks = std::max(blocks, rank.load().kv_blocks_total());
  }
  return blocks;
}

void RankDirectory::PrefillDone(const std::string& rank_id, int64_t prompt_tokens) {
  absl::MutexLock lock(&mutex_);
  for (xpd::v1::RankInfo& rank : prefill_) {
    if (rank.rank_id() != rank_id) continue;
    rank.mutable_load()->set_outstanding_prefill_tokens(
        std::max<int64_t>(0, rank.load().outstanding_prefill_tokens() - prompt_tokens));
  }
}

absl::StatusOr<RankChoice> RankDirectory::PickDecode(int64_t blocks_needed) {
  absl::MutexLock lock(&mutex_);
  if (decode_.empty()) return absl::UnavailableError("no healthy decode rank");
  auto best = std::max_element(decode_.begin(), decode_.end(), [](const auto& a, const auto& b) {
    return a.load().kv_blocks_free() < b.load().kv_blocks_free();
  });
  best->mutable_load()->set_kv_blocks_free(
      std::max<int64_t>(0, best->load().kv_blocks_free() - blocks_needed));
  return RankChoice{best->rank_id(), best->address()};
}

}  // namespace xpd::router
