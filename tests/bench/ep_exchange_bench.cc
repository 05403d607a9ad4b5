// Expert-parallel exchange benchmark (not a test): latency of one MoE layer's
// all-to-all over GrpcEpTransport on loopback, against a bare gRPC stream
// ping-pong of one link's bytes measured in the same run.
//   ep_exchange_bench [--ranks 2,4] [--tokens 1,16,128] [--hidden 1024] [--topk 6]
//                     [--experts 64] [--seconds 1] [--rounds 4] [--seed 1] [--in-process]
// --tokens are per rank, --hidden may be a list (1024: the `small` preset;
// 7168: DeepSeek-V3). Each rank is a GrpcEpTransport with its own gRPC server,
// all in this process with a thread per rank. Every token picks --topk
// distinct experts uniformly at random among --experts split evenly over the
// ranks. One layer: each rank sends every peer an ExpertDispatch (its tokens'
// rows once each, plus the items routed there), receives every peer's,
// answers each with an ExpertCombine of that dispatch's item count, and
// receives its own answers. A layer's latency is the slowest rank's time;
// ranks line up on a barrier (outside the timing) before every layer.
//
// --in-process runs the layers over InProcessEpHub instead: the floor set by
// the ranks' threads and hand-offs alone, without any wire.
//
// Baseline: rank 0 -> rank 1's dispatch and rank 1 -> rank 0's combine of the
// same layer as request and reply of a ping-pong on one long-lived
// bidirectional gRPC stream (same protobuf messages, a GrpcServer, one TCP
// connection): the floor for moving one link's bytes there and back over
// gRPC. Its reply is prebuilt, as the exchange's messages are.
// "layerGB/s": bytes all ranks send in a layer over its p50; "pingGB/s": the
// baseline's request + reply over its p50 (CPU-bound on a small machine, so
// their ratio says more than the latency ratio when ranks outnumber cores).
// Each transport gets --seconds per row, split into --rounds that alternate
// with the other's. Prints a table and one JSON line per row.
#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cmath>
#include <iostream>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/base/command_flags.h"
#include "common/base/status_macros.h"
#include "common/rpc/grpc_server.h"
#include "common/transport/grpc_ep_transport.h"
#include "common/transport/in_process_ep_transport.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"

namespace xpd::transport {
namespace {

using Clock = std::chrono::steady_clock;
using xpd::v1::ExpertMessage;

constexpr absl::Duration kReceiveTimeout = absl::Seconds(20);

double MicrosSince(Clock::time_point start) {
  return std::chrono::duration<double, std::micro>(Clock::now() - start).count();
}

// Nearest-rank percentile of sorted samples.
double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
}

// One layer's messages. dispatch[r][q]: what rank r sends q; combine[r][q]:
// rank r's answer to dispatch[q][r]. Each is only touched by its sender's thread.
struct Layer {
  std::vector<std::vector<ExpertMessage>> dispatch, combine;
  int64_t RankBytes(int32_t r) const {
    int64_t bytes = 0;
    for (size_t q = 0; q < dispatch[r].size(); ++q) {
      if (static_cast<int32_t>(q) == r) continue;
      bytes += dispatch[r][q].ByteSizeLong() + combine[r][q].ByteSizeLong();
    }
    return bytes;
  }
};

Layer MakeLayer(int32_t ranks, int64_t tokens, int64_t hidden, int64_t topk, int64_t experts,
                std::mt19937& rng) {
  const int64_t experts_per_rank = experts / ranks;
  const int64_t row_bytes = hidden * static_cast<int64_t>(sizeof(float));
  Layer layer;
  layer.dispatch.assign(ranks, std::vector<ExpertMessage>(ranks));
  layer.combine.assign(ranks, std::vector<ExpertMessage>(ranks));
  std::vector<int32_t> all(experts);
  std::iota(all.begin(), all.end(), 0);
  for (int32_t r = 0; r < ranks; ++r) {
    // Per peer: (token, expert) items in token order; local experts need no message.
    std::vector<std::vector<std::pair<int32_t, int32_t>>> items(ranks);
    for (int32_t t = 0; t < tokens; ++t) {
      for (int64_t k = 0; k < topk; ++k) {  // partial Fisher-Yates: distinct experts
        std::swap(all[k], all[std::uniform_int_distribution<int64_t>(k, experts - 1)(rng)]);
        const int32_t owner = static_cast<int32_t>(all[k] / experts_per_rank);
        if (owner != r) items[owner].emplace_back(t, all[k]);
      }
    }
    for (int32_t q = 0; q < ranks; ++q) {
      if (q == r) continue;
      xpd::v1::ExpertDispatch* dispatch = layer.dispatch[r][q].mutable_dispatch();
      dispatch->set_hidden(static_cast<int32_t>(hidden));
      int32_t rows = 0;
      int32_t last_token = -1;
      for (const auto& [token, expert] : items[q]) {
        if (token != last_token) ++rows;  // items are grouped by token: each row once
        last_token = token;
        dispatch->add_item_row(rows - 1);
        dispatch->add_item_expert(expert);
      }
      std::vector<float> values(rows * hidden);
      for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i % 4093) * 0.25f;
      dispatch->mutable_rows()->assign(reinterpret_cast<const char*>(values.data()),
                                       rows * row_bytes);
      // q's answer: one output row per item, in item order.
      layer.combine[q][r].mutable_combine()->mutable_outputs()->assign(
          static_cast<size_t>(items[q].size() * row_bytes), '\x01');
      layer.dispatch[r][q].set_layer(0);
      layer.combine[q][r].set_layer(0);
    }
  }
  return layer;
}

// `size` GrpcEpTransports on their own servers, connected all-to-all.
class Group {
 public:
  static absl::StatusOr<std::unique_ptr<Group>> Start(int32_t size, bool in_process) {
    std::unique_ptr<Group> group(new Group());
    if (in_process) {
      group->hub_ = std::make_unique<InProcessEpHub>(size);
      return group;
    }
    std::vector<std::string> addresses;
    for (int32_t r = 0; r < size; ++r) {
      group->transports_.push_back(std::make_unique<GrpcEpTransport>("bench", r, size));
      XPD_ASSIGN_OR_RETURN(
          std::unique_ptr<rpc::GrpcServer> server,
          rpc::GrpcServer::Start({.services = {group->transports_[r]->service()}}));
      addresses.push_back(server->address());
      group->servers_.push_back(std::move(server));
    }
    for (auto& transport : group->transports_) {
      XPD_RETURN_IF_ERROR(transport->Connect(addresses, absl::Now() + absl::Seconds(20)));
    }
    return group;
  }
  ~Group() {
    for (auto& transport : transports_) transport->Shutdown();  // then the servers stop at once
    for (auto& server : servers_) server->Shutdown();
  }
  int32_t size() const {
    return hub_ != nullptr ? hub_->size() : static_cast<int32_t>(transports_.size());
  }
  EpTransport& operator[](int32_t r) { return hub_ != nullptr ? hub_->rank(r) : *transports_[r]; }
  int64_t next_step = 0;

 private:
  Group() = default;
  std::vector<std::unique_ptr<GrpcEpTransport>> transports_;
  std::vector<std::unique_ptr<rpc::GrpcServer>> servers_;
  std::unique_ptr<InProcessEpHub> hub_;  // --in-process instead
};

// Rank r's part of one layer at `step`. Peers are visited starting after r,
// the usual all-to-all schedule, so ranks do not all queue on rank 0 first.
absl::Status RunLayer(Group& group, Layer& layer, int32_t r, int64_t step, int64_t row_bytes) {
  EpTransport& me = group[r];
  const int32_t n = group.size();
  const absl::Time deadline = absl::Now() + kReceiveTimeout;
  for (int32_t i = 1; i < n; ++i) {
    const int32_t q = (r + i) % n;
    layer.dispatch[r][q].set_step(step);
    XPD_RETURN_IF_ERROR(me.Send(q, layer.dispatch[r][q]));
  }
  for (int32_t i = 1; i < n; ++i) {
    const int32_t q = (r + n - i) % n;  // the peers that sent to r first
    XPD_ASSIGN_OR_RETURN(ExpertMessage dispatch,
                         me.Receive(q, step, 0, EpMessageKind::kDispatch, deadline));
    ExpertMessage& answer = layer.combine[r][q];
    if (static_cast<int64_t>(answer.combine().outputs().size()) !=
        dispatch.dispatch().item_row_size() * row_bytes) {
      return absl::InternalError("dispatch item count does not match the prepared combine");
    }
    answer.set_step(step);
    XPD_RETURN_IF_ERROR(me.Send(q, answer));
  }
  for (int32_t i = 1; i < n; ++i) {
    const int32_t q = (r + i) % n;
    XPD_ASSIGN_OR_RETURN(ExpertMessage combine,
                         me.Receive(q, step, 0, EpMessageKind::kCombine, deadline));
    if (static_cast<int64_t>(combine.combine().outputs().size()) !=
        layer.dispatch[r][q].dispatch().item_row_size() * row_bytes) {
      return absl::InternalError("combine size does not match the dispatch");
    }
  }
  return absl::OkStatus();
}

// Runs layers on a thread per rank until `seconds` have passed (at least
// `min_layers`), adding each layer's latency (slowest rank) to `samples`.
absl::Status RunExchange(Group& group, Layer& layer, int64_t row_bytes, double seconds,
                         int64_t min_layers, std::vector<double>* samples) {
  const int32_t n = group.size();
  std::vector<double> micros(n);
  absl::Mutex mu;
  absl::Status error;
  std::atomic<bool> failed{false};
  bool started = false, stop = false;
  int64_t layers = 0;
  const Clock::time_point end = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                   std::chrono::duration<double>(seconds));
  // Runs once all ranks finished a layer, before any starts the next.
  auto between_layers = [&]() noexcept {
    if (started) {
      samples->push_back(*std::max_element(micros.begin(), micros.end()));
      ++layers;
      ++group.next_step;
    }
    started = true;
    stop = failed.load() || (layers >= min_layers && Clock::now() >= end);
  };
  std::barrier sync(n, between_layers);
  std::vector<std::thread> threads;
  for (int32_t r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      for (;;) {
        sync.arrive_and_wait();
        if (stop) return;
        const Clock::time_point start = Clock::now();
        const absl::Status status = RunLayer(group, layer, r, group.next_step, row_bytes);
        micros[r] = MicrosSince(start);
        if (!status.ok()) {
          absl::MutexLock lock(&mu);
          if (error.ok()) error = status;
          failed = true;
          sync.arrive_and_drop();
          return;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  return error;
}

// The baseline's server: answers every request on a bidirectional stream with
// the prebuilt reply. Hand-registered (as generated code does) so the bench
// needs no proto of its own and sends the very messages the exchange does.
constexpr char kPingPongMethod[] = "/xpd.bench.PingPong/Exchange";

class PingPongService final : public grpc::Service {
 public:
  using Stream = grpc::ServerReaderWriter<ExpertMessage, ExpertMessage>;
  PingPongService() {
    AddMethod(new grpc::internal::RpcServiceMethod(
        kPingPongMethod, grpc::internal::RpcMethod::BIDI_STREAMING,
        new grpc::internal::BidiStreamingHandler<PingPongService, ExpertMessage, ExpertMessage>(
            [](PingPongService* service, grpc::ServerContext*, Stream* stream) {
              return service->Serve(stream);
            },
            this)));
  }
  void set_reply(const ExpertMessage* reply) { reply_ = reply; }

 private:
  grpc::Status Serve(Stream* stream) {
    for (;;) {
      ExpertMessage request;  // fresh, as each message the exchange receives
      if (!stream->Read(&request)) return grpc::Status::OK;
      if (!stream->Write(*reply_.load())) return grpc::Status::OK;
    }
  }
  std::atomic<const ExpertMessage*> reply_{nullptr};
};

class PingPongClient {
 public:
  explicit PingPongClient(const std::string& address) {
    grpc::ChannelArguments args;
    args.SetMaxSendMessageSize(-1);
    args.SetMaxReceiveMessageSize(-1);
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    channel_ = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
    method_ = std::make_unique<grpc::internal::RpcMethod>(
        kPingPongMethod, grpc::internal::RpcMethod::BIDI_STREAMING, channel_);
    stream_.reset(grpc::internal::ClientReaderWriterFactory<ExpertMessage, ExpertMessage>::Create(
        channel_.get(), *method_, &context_));
  }
  ~PingPongClient() {
    stream_->WritesDone();
    stream_->Finish();
  }
  absl::Status RoundTrip(const ExpertMessage& request, int64_t reply_bytes) {
    ExpertMessage reply;
    if (!stream_->Write(request) || !stream_->Read(&reply)) {
      return absl::UnavailableError("ping-pong stream broke");
    }
    if (static_cast<int64_t>(reply.combine().outputs().size()) != reply_bytes) {
      return absl::InternalError("ping-pong reply of the wrong size");
    }
    return absl::OkStatus();
  }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<grpc::internal::RpcMethod> method_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<ExpertMessage, ExpertMessage>> stream_;
};

absl::Status RunPingPong(PingPongClient& client, const ExpertMessage& request, int64_t reply_bytes,
                         double seconds, int64_t min_trips, std::vector<double>* samples) {
  const Clock::time_point end = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                   std::chrono::duration<double>(seconds));
  for (int64_t trips = 0; trips < min_trips || Clock::now() < end; ++trips) {
    const Clock::time_point start = Clock::now();
    XPD_RETURN_IF_ERROR(client.RoundTrip(request, reply_bytes));
    samples->push_back(MicrosSince(start));
  }
  return absl::OkStatus();
}

struct Row {
  int64_t ranks, tokens, hidden;
  int64_t link_bytes;                      // the baseline's request + reply
  int64_t rank_bytes;                      // sent per rank and layer, averaged over ranks
  std::vector<double> exchange, baseline;  // µs, sorted
  // What all ranks send in a layer, and the baseline's request + reply, per
  // second at p50: with more ranks a layer moves more than the one link.
  double layer_gbps() const { return ranks * rank_bytes / Percentile(exchange, 0.5) / 1e3; }
  double baseline_gbps() const { return link_bytes / Percentile(baseline, 0.5) / 1e3; }
};

absl::Status Run(const std::vector<std::string>& args) {
  XPD_ASSIGN_OR_RETURN(
      base::CommandFlags flags,
      base::CommandFlags::Parse(
          args, {"ranks", "tokens", "hidden", "topk", "experts", "seconds", "rounds", "seed"},
          {"in-process"}));
  XPD_ASSIGN_OR_RETURN(int64_t topk, flags.GetInt("topk", 6));
  XPD_ASSIGN_OR_RETURN(int64_t experts, flags.GetInt("experts", 64));
  XPD_ASSIGN_OR_RETURN(double seconds, flags.GetDouble("seconds", 1.0));
  XPD_ASSIGN_OR_RETURN(int64_t rounds, flags.GetInt("rounds", 4));
  XPD_ASSIGN_OR_RETURN(int64_t seed, flags.GetInt("seed", 1));
  const bool in_process = flags.Has("in-process");
  std::vector<int64_t> rank_counts = {2, 4}, token_counts = {1, 16, 128}, hiddens = {1024};
  if (flags.Has("ranks")) {
    XPD_ASSIGN_OR_RETURN(rank_counts, flags.GetIntList("ranks"));
  }
  if (flags.Has("tokens")) {
    XPD_ASSIGN_OR_RETURN(token_counts, flags.GetIntList("tokens"));
  }
  if (flags.Has("hidden")) {
    XPD_ASSIGN_OR_RETURN(hiddens, flags.GetIntList("hidden"));
  }
  if (seconds <= 0 || rounds < 1 || topk < 1 || experts < 1 || rank_counts.empty() ||
      token_counts.empty() || hiddens.empty()) {
    return absl::InvalidArgumentError(
        "--seconds, --rounds, --topk, --experts, --ranks, --tokens and --hidden must be "
        "positive");
  }
  if (topk > experts) return absl::InvalidArgumentError("--topk: more than --experts");
  for (const int64_t ranks : rank_counts) {
    if (ranks < 2 || experts % ranks != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--ranks: ", ranks, " must be >= 2 and divide --experts ", experts));
    }
  }
  for (const int64_t tokens : token_counts) {
    if (tokens < 1) return absl::InvalidArgumentError("--tokens: every count must be >= 1");
  }
  for (const int64_t hidden : hiddens) {
    if (hidden < 1) return absl::InvalidArgumentError("--hidden: every size must be >= 1");
  }

  PingPongService ping_pong;
  XPD_ASSIGN_OR_RETURN(std::unique_ptr<rpc::GrpcServer> ping_pong_server,
                       rpc::GrpcServer::Start({.services = {&ping_pong}}));
  std::vector<Row> rows;
  {
    PingPongClient client(ping_pong_server->address());
    std::mt19937 rng(static_cast<uint32_t>(seed));
    for (const int64_t ranks : rank_counts) {
      XPD_ASSIGN_OR_RETURN(std::unique_ptr<Group> group,
                           Group::Start(static_cast<int32_t>(ranks), in_process));
      for (const int64_t hidden : hiddens) {
        for (const int64_t tokens : token_counts) {
          Layer layer = MakeLayer(static_cast<int32_t>(ranks), tokens, hidden, topk, experts, rng);
          const int64_t row_bytes = hidden * static_cast<int64_t>(sizeof(float));
          const ExpertMessage& request = layer.dispatch[0][1];
          const ExpertMessage& reply = layer.combine[1][0];
          const int64_t reply_bytes = static_cast<int64_t>(reply.combine().outputs().size());
          ping_pong.set_reply(&reply);
          Row row{
              .ranks = ranks,
              .tokens = tokens,
              .hidden = hidden,
              .link_bytes = static_cast<int64_t>(request.ByteSizeLong() + reply.ByteSizeLong())};
          for (int32_t r = 0; r < ranks; ++r) row.rank_bytes += layer.RankBytes(r);
          row.rank_bytes /= ranks;
          // Untimed warm-up (buffers first touched, flow-control windows
          // grown), then alternating rounds, so load changes on a shared
          // machine hit both alike and the ratio stays meaningful.
          std::vector<double> discard;
          XPD_RETURN_IF_ERROR(RunExchange(*group, layer, row_bytes, 0, 5, &discard));
          XPD_RETURN_IF_ERROR(RunPingPong(client, request, reply_bytes, 0, 5, &discard));
          for (int64_t round = 0; round < rounds; ++round) {
            XPD_RETURN_IF_ERROR(
                RunExchange(*group, layer, row_bytes, seconds / rounds, 1, &row.exchange));
            XPD_RETURN_IF_ERROR(
                RunPingPong(client, request, reply_bytes, seconds / rounds, 1, &row.baseline));
          }
          std::sort(row.exchange.begin(), row.exchange.end());
          std::sort(row.baseline.begin(), row.baseline.end());
          rows.push_back(std::move(row));
        }
      }
    }
  }
  ping_pong_server->Shutdown();

  std::cout << absl::StrFormat(
      "MoE layer all-to-all over %s, a thread per rank: top-%d of %d experts, dispatch + "
      "combine; baseline: one link's request + reply as a ping-pong on one bidi gRPC stream. "
      "%.1f s per transport and row in %d alternating rounds. Latency in us.\n",
      in_process ? "InProcessEpHub" : "gRPC loopback (GrpcEpTransport)", topk, experts, seconds,
      rounds);
  std::cout << absl::StrFormat("%5s %6s %6s %9s %9s %9s %9s %9s %9s %6s %6s %9s %8s %7s\n", "ranks",
                               "tokens", "hidden", "KiB/link", "KiB/rank", "layer p50", "layer p99",
                               "ping p50", "ping p99", "p50 x", "p99 x", "layerGB/s", "pingGB/s",
                               "layers");
  for (const Row& row : rows) {
    const double exchange_p50 = Percentile(row.exchange, 0.5);
    const double exchange_p99 = Percentile(row.exchange, 0.99);
    const double baseline_p50 = Percentile(row.baseline, 0.5);
    const double baseline_p99 = Percentile(row.baseline, 0.99);
    std::cout << absl::StrFormat(
        "%5d %6d %6d %9.1f %9.1f %9.0f %9.0f %9.0f %9.0f %6.2f %6.2f %9.3f %8.3f %7d\n", row.ranks,
        row.tokens, row.hidden, row.link_bytes / 1024.0, row.rank_bytes / 1024.0, exchange_p50,
        exchange_p99, baseline_p50, baseline_p99, exchange_p50 / baseline_p50,
        exchange_p99 / baseline_p99, row.layer_gbps(), row.baseline_gbps(), row.exchange.size());
  }
  for (const Row& row : rows) {
    const nlohmann::json out = {
        {"bench", "ep_exchange"},
        {"transport", in_process ? "in_process" : "grpc"},
        {"ranks", row.ranks},
        {"tokens_per_rank", row.tokens},
        {"hidden", row.hidden},
        {"topk", topk},
        {"experts", experts},
        {"link_bytes", row.link_bytes},
        {"rank_bytes", row.rank_bytes},
        {"layer_p50_us", Percentile(row.exchange, 0.5)},
        {"layer_p99_us", Percentile(row.exchange, 0.99)},
        {"baseline", "bidi_stream_ping_pong"},
        {"baseline_p50_us", Percentile(row.baseline, 0.5)},
        {"baseline_p99_us", Percentile(row.baseline, 0.99)},
        {"p50_over_baseline", Percentile(row.exchange, 0.5) / Percentile(row.baseline, 0.5)},
        {"p99_over_baseline", Percentile(row.exchange, 0.99) / Percentile(row.baseline, 0.99)},
        {"layer_gb_per_s", row.layer_gbps()},
        {"baseline_gb_per_s", row.baseline_gbps()},
        {"layers", row.exchange.size()},
        {"baseline_trips", row.baseline.size()},
        {"seconds", seconds},
        {"rounds", rounds}};
    std::cout << out.dump() << std::endl;
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace xpd::transport

int main(int argc, char** argv) {
  return xpd::base::ExitStatus("ep_exchange_bench", xpd::transport::Run({argv + 1, argv + argc}));
}
