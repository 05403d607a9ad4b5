#include "common/transport/ep_group_exchange.h"

#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace xpd::transport {
namespace {

using placement::ExpertPlacement;
using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

// Tokens one source (a peer, or this rank itself) sent this rank for one
// layer, and where their expert outputs go.
struct EpGroupExchange::Inbound {
  int32_t from = 0;
  const float* rows = nullptr;  // [n, hidden]
  std::vector<int32_t> item_row, item_expert;
  std::vector<float> outputs;  // [items, hidden]
};

EpGroupExchange::EpGroupExchange(EpTransport& transport, ExpertPlacement placement,
                                 EpGroupOptions options)
    : transport_(transport), options_(options) {
  const int64_t epoch = placement.epoch;
  load_.assign(placement.layers.size() * placement.num_experts, 0);
  load_epoch_ = epoch;
  commit_epoch_ = announced_epoch_ = epoch;
  current_ = MakeCurrent(std::move(placement), transport.rank());
  transport_.set_on_arrival([this] { Wake(); });
}

EpGroupExchange::~EpGroupExchange() { transport_.set_on_arrival(nullptr); }

std::shared_ptr<const EpGroupExchange::Current> EpGroupExchange::MakeCurrent(
    ExpertPlacement placement, int32_t rank) {
  placement::ReplicaIndex replicas(placement);
  std::vector<std::vector<bool>> held(placement.layers.size(),
                                      std::vector<bool>(placement.num_experts, false));
  for (size_t l = 0; l < placement.layers.size(); ++l) {
    for (int32_t e : placement.HeldExperts(rank, static_cast<int32_t>(l))) held[l][e] = true;
  }
  return std::make_shared<const Current>(
      Current{std::move(placement), std::move(replicas), std::move(held)});
}

std::shared_ptr<const EpGroupExchange::Current> EpGroupExchange::current() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

void EpGroupExchange::set_wake(std::function<void()> wake) {
  absl::MutexLock lock(&wake_mu_);
  wake_ = std::move(wake);
}

void EpGroupExchange::Wake() {
  absl::MutexLock lock(&wake_mu_);
  if (wake_) wake_();
}

void EpGroupExchange::set_on_switch(
    std::function<void(const ExpertPlacement&, const ExpertPlacement&)> on_switch) {
  on_switch_ = std::move(on_switch);
}

void EpGroupExchange::set_on_layer(std::function<void(const EpLayerTiming&)> on_layer) {
  on_layer_ = std::move(on_layer);
}

ExpertPlacement EpGroupExchange::placement() const { return current()->placement; }

std::optional<ExpertPlacement> EpGroupExchange::staged() const {
  absl::MutexLock lock(&mu_);
  return staged_;
}

int64_t EpGroupExchange::epoch() const { return current()->placement.epoch; }

bool EpGroupExchange::StepRequested() {
  {
    absl::MutexLock lock(&mu_);
    // Announce a commit once; the peers' own announcements wake us again.
    if (commit_epoch_ > announced_epoch_) return true;
  }
  return transport_.HasHeader(step_);
}

absl::StatusOr<StepPlan> EpGroupExchange::BeginStep(bool has_work) {
  const int64_t step = step_++;
  xpd::v1::ExpertMessage header;
  header.set_from_rank(rank());
  header.set_step(step);
  header.set_layer(-1);
  int64_t ready_epoch;
  {
    absl::MutexLock lock(&mu_);
    ready_epoch = commit_epoch_;
    announced_epoch_ = commit_epoch_;
  }
  header.mutable_header()->set_has_work(has_work);
  header.mutable_header()->set_ready_epoch(ready_epoch);
  for (int32_t peer = 0; peer < size(); ++peer) {
    if (peer == rank()) continue;
    if (absl::Status status = transport_.Send(peer, header); !status.ok()) return status;
  }
  StepPlan plan{.any_work = has_work};
  int64_t group_ready = ready_epoch;
  const absl::Time deadline = absl::Now() + options_.timeout;
  for (int32_t peer = 0; peer < size(); ++peer) {
    if (peer == rank()) continue;
    absl::StatusOr<xpd::v1::ExpertMessage> theirs =
        transport_.Receive(peer, step, -1, EpMessageKind::kHeader, deadline);
    if (!theirs.ok()) return theirs.status();
    plan.any_work = plan.any_work || theirs->header().has_work();
    group_ready = std::min(group_ready, theirs->header().ready_epoch());
  }

  // Every rank saw the same headers, so every rank switches on this step.
  std::shared_ptr<const Current> before = current();
  if (group_ready > before->placement.epoch) {
    std::shared_ptr<const Current> after;
    {
      absl::MutexLock lock(&mu_);
      if (!staged_.has_value() || staged_->epoch != group_ready) {
        return absl::InternalError(absl::StrCat("the group switches to placement epoch ",
                                                group_ready, " which rank ", rank(),
                                                " has not prepared"));
      }
      current_ = after = MakeCurrent(std::move(*staged_), rank());
      staged_.reset();
    }
    {
      absl::MutexLock lock(&load_mu_);
      load_epoch_ = after->placement.epoch;
      load_.assign(after->placement.layers.size() * after->placement.num_experts, 0);
    }
    if (on_switch_) on_switch_(before->placement, after->placement);
    plan.switched = true;
  }
  return plan;
}

absl::Status EpGroupExchange::Stage(ExpertPlacement next) {
  if (absl::Status status = placement::ValidatePlacement(next); !status.ok()) return status;
  absl::MutexLock lock(&mu_);
  const ExpertPlacement& now = current_->placement;
  if (next.num_ranks != size() || next.num_experts != now.num_experts ||
      next.slots_per_layer != now.slots_per_layer || next.layers != now.layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "placement epoch ", next.epoch, " has another shape than the group's (ranks ",
        next.num_ranks, "/", size(), ", experts ", next.num_experts, "/", now.num_experts,
        ", slots ", next.slots_per_layer, "/", now.slots_per_layer, ")"));
  }
  if (next.epoch <= now.epoch) {
    return absl::FailedPreconditionError(absl::StrCat(
        "placement epoch ", next.epoch, " is not newer than the current epoch ", now.epoch));
  }
  if (commit_epoch_ > now.epoch) {
    return absl::FailedPreconditionError(
        absl::StrCat("placement epoch ", commit_epoch_, " is being committed"));
  }
  staged_ = std::move(next);
  return absl::OkStatus();
}

absl::Status EpGroupExchange::RequestCommit(int64_t epoch) {
  {
    absl::MutexLock lock(&mu_);
    if (current_->placement.epoch == epoch) return absl::OkStatus();  // already switched
    if (!staged_.has_value() || staged_->epoch != epoch) {
      return absl::FailedPreconditionError(
          absl::StrCat("placement epoch ", epoch, " was not prepared on rank ", rank()));
    }
    commit_epoch_ = epoch;
  }
  Wake();
  return absl::OkStatus();
}

absl::Status EpGroupExchange::WaitForEpoch(int64_t epoch, absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  const auto reached = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return current_->placement.epoch >= epoch;
  };
  if (!mu_.AwaitWithDeadline(absl::Condition(&reached), deadline)) {
    return absl::DeadlineExceededError(
        absl::StrCat("the group did not switch to placement epoch ", epoch, " in time (rank ",
                     rank(), " is on epoch ", current_->placement.epoch, ")"));
  }
  return absl::OkStatus();
}

absl::Status EpGroupExchange::Abort(int64_t epoch) {
  absl::MutexLock lock(&mu_);
  if (current_->placement.epoch >= epoch) {
    return absl::FailedPreconditionError(
        absl::StrCat("placement epoch ", epoch, " is already serving on rank ", rank()));
  }
  if (staged_.has_value() && staged_->epoch == epoch) staged_.reset();
  commit_epoch_ = announced_epoch_ = std::min(commit_epoch_, current_->placement.epoch);
  return absl::OkStatus();
}

std::vector<int64_t> EpGroupExchange::TakeExpertLoad(int64_t* epoch) {
  absl::MutexLock lock(&load_mu_);
  std::vector<int64_t> taken(load_.size(), 0);
  taken.swap(load_);
  if (epoch != nullptr) *epoch = load_epoch_;
  return taken;
}

absl::Status EpGroupExchange::DispatchCombine(const MoeExchangeArgs& args,
                                              const ExpertCompute& compute_local) {
  if (step_ == 0) {
    // Peers file messages by step: without a step header they would wait
    // for this rank until their timeout.
    return absl::FailedPreconditionError("MoE exchange before the group's first BeginStep");
  }
  const Clock::time_point start = Clock::now();
  const std::shared_ptr<const Current> cur = current();
  const ExpertPlacement& p = cur->placement;
  const int32_t moe = p.MoeIndex(args.layer);
  if (moe < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("layer ", args.layer, " has no expert placement"));
  }
  const int64_t d = args.hidden, k_max = args.top_k, step = step_ - 1;
  const int32_t me = rank(), n = size();

  // Route every (token, k) item to one replica of its expert. The replica
  // only changes where the product is computed, never its value.
  std::vector<Inbound> outgoing(n);
  std::vector<std::vector<int32_t>> row_slot(n);     // per destination: token -> its row there
  std::vector<std::vector<int64_t>> item_origin(n);  // per destination item: token * top_k + k
  std::vector<std::vector<float>> send_rows(n);
  {
    absl::MutexLock lock(&load_mu_);
    for (int64_t t = 0; t < args.rows; ++t) {
      for (int64_t k = 0; k < k_max; ++k) {
        const int32_t expert = args.expert_ids[t * k_max + k];
        if (expert < 0 || expert >= p.num_experts) {
          return absl::InternalError(absl::StrCat("routed expert ", expert, " out of range"));
        }
        if (load_epoch_ == p.epoch) ++load_[moe * p.num_experts + expert];
        const std::vector<int32_t>& slots = cur->replicas.Slots(moe, expert);
        const int32_t slot = slots[(step + me + t * k_max + k) % slots.size()];
        const int32_t dest = p.RankOfSlot(slot);
        std::vector<int32_t>& rows_there = row_slot[dest];
        if (rows_there.empty()) rows_there.assign(args.rows, -1);
        if (rows_there[t] < 0) {
          rows_there[t] = static_cast<int32_t>(send_rows[dest].size() / d);
          send_rows[dest].insert(send_rows[dest].end(), args.x + t * d, args.x + (t + 1) * d);
        }
        outgoing[dest].item_row.push_back(rows_there[t]);
        outgoing[dest].item_expert.push_back(expert);
        item_origin[dest].push_back(t * k_max + k);
      }
    }
  }

  // Dispatch: one message to every peer, empty or not, then every peer's.
  int64_t bytes_sent = 0;
  for (int32_t peer = 0; peer < n; ++peer) {
    if (peer == me) continue;
    xpd::v1::ExpertMessage message;
    message.set_from_rank(me);
    message.set_step(step);
    message.set_layer(args.layer);
    xpd::v1::ExpertDispatch* dispatch = message.mutable_dispatch();
    dispatch->set_hidden(static_cast<int32_t>(d));
    dispatch->set_rows(send_rows[peer].data(), send_rows[peer].size() * sizeof(float));
    dispatch->mutable_item_row()->Assign(outgoing[peer].item_row.begin(),
                                         outgoing[peer].item_row.end());
    dispatch->mutable_item_expert()->Assign(outgoing[peer].item_expert.begin(),
                                            outgoing[peer].item_expert.end());
    bytes_sent += static_cast<int64_t>(dispatch->rows().size());
    if (absl::Status status = transport_.Send(peer, message); !status.ok()) return status;
  }
  const absl::Time deadline = absl::Now() + options_.timeout;
  std::vector<xpd::v1::ExpertMessage> received(n);
  std::vector<Inbound> inbound(n);
  for (int32_t from = 0; from < n; ++from) {
    Inbound& in = inbound[from];
    in.from = from;
    if (from == me) {
      in.rows = send_rows[me].data();
      in.item_row = std::move(outgoing[me].item_row);
      in.item_expert = std::move(outgoing[me].item_expert);
    } else {
      absl::StatusOr<xpd::v1::ExpertMessage> message =
          transport_.Receive(from, step, args.layer, EpMessageKind::kDispatch, deadline);
      if (!message.ok()) return message.status();
      received[from] = std::move(*message);
      const xpd::v1::ExpertDispatch& dispatch = received[from].dispatch();
      const int64_t rows =
          static_cast<int64_t>(dispatch.rows().size() / sizeof(float)) / std::max<int64_t>(d, 1);
      if (dispatch.hidden() != d ||
          rows * d * static_cast<int64_t>(sizeof(float)) !=
              static_cast<int64_t>(dispatch.rows().size()) ||
          dispatch.item_row_size() != dispatch.item_expert_size()) {
        return absl::InternalError(
            absl::StrCat("malformed dispatch from rank ", from, " for layer ", args.layer));
      }
      in.rows = reinterpret_cast<const float*>(dispatch.rows().data());
      in.item_row.assign(dispatch.item_row().begin(), dispatch.item_row().end());
      in.item_expert.assign(dispatch.item_expert().begin(), dispatch.item_expert().end());
      for (size_t i = 0; i < in.item_row.size(); ++i) {
        const int32_t e = in.item_expert[i];
        if (in.item_row[i] < 0 || in.item_row[i] >= rows || e < 0 || e >= p.num_experts ||
            !cur->held[moe][e]) {
          return absl::InternalError(absl::StrCat(
              "rank ", from, " dispatched expert ", e, " of layer ", args.layer, " to rank ", me,
              ", which does not hold it in placement epoch ", p.epoch));
        }
      }
    }
    in.outputs.resize(in.item_row.size() * d);
  }

  // Compute: one batch per held expert over every source's items.
  std::vector<std::vector<std::pair<int32_t, int32_t>>> by_expert(p.num_experts);
  int64_t total = 0;
  for (const Inbound& in : inbound) {
    for (size_t i = 0; i < in.item_expert.size(); ++i) {
      by_expert[in.item_expert[i]].emplace_back(in.from, static_cast<int32_t>(i));
    }
    total += static_cast<int64_t>(in.item_expert.size());
  }
  std::vector<float> gathered(total * d), computed(total * d);
  std::vector<ExpertBatch> batches;
  int64_t row = 0;
  for (int32_t e = 0; e < p.num_experts; ++e) {
    if (by_expert[e].empty()) continue;
    const int64_t first = row;
    for (const auto& [from, item] : by_expert[e]) {
      const Inbound& in = inbound[from];
      std::memcpy(&gathered[row * d], in.rows + static_cast<int64_t>(in.item_row[item]) * d,
                  sizeof(float) * d);
      ++row;
    }
    batches.push_back({.expert = e,
                       .in = &gathered[first * d],
                       .out = &computed[first * d],
                       .rows = row - first});
  }
  const Clock::time_point compute_start = Clock::now();
  if (absl::Status status = compute_local(batches); !status.ok()) return status;
  const double compute_seconds = SecondsSince(compute_start);
  row = 0;
  for (int32_t e = 0; e < p.num_experts; ++e) {
    for (const auto& [from, item] : by_expert[e]) {
      std::memcpy(&inbound[from].outputs[static_cast<int64_t>(item) * d], &computed[row * d],
                  sizeof(float) * d);
      ++row;
    }
  }

  // Combine: send the peers their outputs, then collect ours.
  for (int32_t peer = 0; peer < n; ++peer) {
    if (peer == me) continue;
    xpd::v1::ExpertMessage message;
    message.set_from_rank(me);
    message.set_step(step);
    message.set_layer(args.layer);
    message.mutable_combine()->set_outputs(inbound[peer].outputs.data(),
                                           inbound[peer].outputs.size() * sizeof(float));
    bytes_sent += static_cast<int64_t>(message.combine().outputs().size());
    if (absl::Status status = transport_.Send(peer, message); !status.ok()) return status;
  }
  std::vector<const float*> slot_out(args.rows * k_max, nullptr);
  std::vector<xpd::v1::ExpertMessage> combined(n);
  for (int32_t from = 0; from < n; ++from) {
    const float* outputs = nullptr;
    if (from == me) {
      outputs = inbound[me].outputs.data();
    } else {
      absl::StatusOr<xpd::v1::ExpertMessage> message =
          transport_.Receive(from, step, args.layer, EpMessageKind::kCombine, deadline);
      if (!message.ok()) return message.status();
      combined[from] = std::move(*message);
      const std::string& bytes = combined[from].combine().outputs();
      if (static_cast<int64_t>(bytes.size()) != static_cast<int64_t>(item_origin[from].size()) * d *
                                                    static_cast<int64_t>(sizeof(float))) {
        return absl::InternalError(absl::StrCat("rank ", from, " combined ", bytes.size(),
                                                " bytes for ", item_origin[from].size(),
                                                " items of layer ", args.layer));
      }
      outputs = reinterpret_cast<const float*>(bytes.data());
    }
    for (size_t i = 0; i < item_origin[from].size(); ++i) {
      slot_out[item_origin[from][i]] = outputs + static_cast<int64_t>(i) * d;
    }
  }
  CombineExpertOutputs(args.rows, static_cast<int32_t>(k_max), d, args.weights, slot_out.data(),
                       args.out);
  if (on_layer_) {
    on_layer_({.layer = args.layer,
               .exchange_seconds = SecondsSince(start) - compute_seconds,
               .bytes_sent = bytes_sent,
               .items_served = total});
  }
  return absl::OkStatus();
}

}  // namespace xpd::transport
