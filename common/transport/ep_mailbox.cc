#include "common/transport/ep_mailbox.h"

#include "absl/strings/str_cat.h"

namespace xpd::transport {

EpMessageKind KindOf(const xpd::v1::ExpertMessage& message) {
  switch (message.body_case()) {
    case xpd::v1::ExpertMessage::kDispatch:
      return EpMessageKind::kDispatch;
    case xpd::v1::ExpertMessage::kCombine:
      return EpMessageKind::kCombine;
    default:
      return EpMessageKind::kHeader;
  }
}

EpMailbox::EpMailbox(int32_t group_size) : group_size_(group_size) {}

void EpMailbox::set_on_arrival(std::function<void()> callback) {
  on_arrival_ = std::move(callback);
}

absl::Status EpMailbox::Put(xpd::v1::ExpertMessage message) {
  const int32_t from = message.from_rank();
  if (from < 0 || from >= group_size_) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert message from rank ", from, " outside a group of ", group_size_));
  }
  const Key key{from, message.step(), message.layer(), static_cast<int>(KindOf(message))};
  {
    absl::MutexLock lock(&mu_);
    if (!messages_.emplace(key, std::move(message)).second) {
      return absl::InvalidArgumentError(absl::StrCat("duplicate expert message from rank ", from,
                                                     " for step ", std::get<1>(key), " layer ",
                                                     std::get<2>(key)));
    }
  }
  if (on_arrival_) on_arrival_();
  return absl::OkStatus();
}

absl::StatusOr<xpd::v1::ExpertMessage> EpMailbox::Take(int32_t peer, int64_t step, int32_t layer,
                                                       EpMessageKind kind, absl::Time deadline) {
  const Key key{peer, step, layer, static_cast<int>(kind)};
  absl::MutexLock lock(&mu_);
  const auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return messages_.contains(key) || broken_.contains(peer);
  };
  mu_.AwaitWithDeadline(absl::Condition(&ready), deadline);
  if (auto it = messages_.find(key); it != messages_.end()) {
    xpd::v1::ExpertMessage message = std::move(it->second);
    messages_.erase(it);
    return message;
  }
  if (auto it = broken_.find(peer); it != broken_.end()) return it->second;
  return absl::DeadlineExceededError(absl::StrCat("expert-parallel rank ", peer,
                                                  " sent nothing for step ", step, " layer ", layer,
                                                  " in time"));
}

bool EpMailbox::HasHeader(int64_t step) {
  absl::MutexLock lock(&mu_);
  for (int32_t peer = 0; peer < group_size_; ++peer) {
    if (messages_.contains(Key{peer, step, -1, static_cast<int>(EpMessageKind::kHeader)})) {
      return true;
    }
  }
  return false;
}

void EpMailbox::MarkBroken(int32_t peer, absl::Status status) {
  {
    absl::MutexLock lock(&mu_);
    broken_.emplace(peer, std::move(status));
  }
  if (on_arrival_) on_arrival_();
}

}  // namespace xpd::transport
