#include "common/transport/in_process_ep_transport.h"

#include "absl/strings/str_cat.h"

namespace xpd::transport {

class InProcessEpHub::Rank final : public EpTransport {
 public:
  Rank(InProcessEpHub& hub, int32_t rank, int32_t size) : hub_(hub), rank_(rank), mailbox_(size) {}

  int32_t rank() const override { return rank_; }
  int32_t size() const override { return hub_.size(); }
  absl::Status Send(int32_t peer, const xpd::v1::ExpertMessage& message) override {
    if (peer < 0 || peer >= hub_.size() || peer == rank_) {
      return absl::InvalidArgumentError(absl::StrCat("no peer rank ", peer));
    }
    xpd::v1::ExpertMessage copy = message;
    copy.set_from_rank(rank_);
    return hub_.ranks_[peer]->mailbox_.Put(std::move(copy));
  }
  absl::StatusOr<xpd::v1::ExpertMessage> Receive(int32_t peer, int64_t step, int32_t layer,
                                                 EpMessageKind kind, absl::Time deadline) override {
    return mailbox_.Take(peer, step, layer, kind, deadline);
  }
  bool HasHeader(int64_t step) override { return mailbox_.HasHeader(step); }
  void set_on_arrival(std::function<void()> callback) override {
    mailbox_.set_on_arrival(std::move(callback));
  }

 private:
  InProcessEpHub& hub_;
  const int32_t rank_;
  EpMailbox mailbox_;
};

InProcessEpHub::InProcessEpHub(int32_t size) {
  for (int32_t r = 0; r < size; ++r) ranks_.push_back(std::make_unique<Rank>(*this, r, size));
}

InProcessEpHub::~InProcessEpHub() = default;

EpTransport& InProcessEpHub::rank(int32_t r) { return *ranks_[r]; }

}  // namespace xpd::transport
