// xpd-decode: one decode rank of an expert-parallel (EP) group. It holds
// attention, dense and shared weights plus the routed experts its placement
// slots name, a paged latent KV pool, and runs continuous batching over the
// requests the router announces, stepping in lockstep with its group.
//   xpd-decode --model DIR --controller HOST:PORT [--compute f32|bf16] [--threads N]
//              [--kv-tokens N] [--host H] [--port P] [--metrics-port M] [--rank R]
//              [--advertise-address HOST:PORT] [--ep-size N] [--ep-rank R]
//              [--ep-group NAME] [--ep-timeout-ms MS] [--spare-expert-bytes B]
//              [--model-id NAME]
// --ep-rank defaults to --rank; a group of one (the default) holds every expert.
// --model-id (default "default", as the router's) labels the metrics.
// Prints "listening decode=HOST:PORT metrics=HOST:PORT" once serving.
#include <iostream>

#include "common/base/command_flags.h"
#include "common/base/shutdown_signal.h"
#include "common/base/status_macros.h"
#include "common/cluster/rank_agent.h"
#include "common/metrics/metrics_server.h"
#include "common/rpc/grpc_server.h"
#include "common/runtime/decode_scheduler.h"
#include "common/runtime/model_session.h"
#include "common/transport/grpc_kv_transport.h"
#include "services/decode/decode_service.h"
#include "services/decode/expert_parallel_rank.h"

namespace xpd::decode {
namespace {

absl::Status Run(const std::vector<std::string>& args) {
  std::set<std::string> value_flags = runtime::kModelValueFlags;
  value_flags.insert({"controller", "kv-tokens", "host", "port", "metrics-port", "rank",
                      "advertise-address", "model-id", "ep-size", "ep-rank", "ep-group",
                      "ep-timeout-ms", "spare-expert-bytes"});
  XPD_ASSIGN_OR_RETURN(base::CommandFlags flags, base::CommandFlags::Parse(args, value_flags, {}));
  XPD_ASSIGN_OR_RETURN(std::string controller, flags.GetString("controller"));
  XPD_ASSIGN_OR_RETURN(int64_t kv_tokens, flags.GetInt("kv-tokens", 32768));
  XPD_ASSIGN_OR_RETURN(int64_t port, flags.GetInt("port", 0));
  XPD_ASSIGN_OR_RETURN(int64_t metrics_port, flags.GetInt("metrics-port", 0));
  XPD_ASSIGN_OR_RETURN(int64_t rank, flags.GetInt("rank", 0));
  const std::string host = flags.GetString("host", "127.0.0.1");
  XPD_ASSIGN_OR_RETURN(int64_t ep_size, flags.GetInt("ep-size", 1));
  XPD_ASSIGN_OR_RETURN(int64_t ep_rank, flags.GetInt("ep-rank", rank));
  XPD_ASSIGN_OR_RETURN(int64_t ep_timeout_ms, flags.GetInt("ep-timeout-ms", 60000));
  XPD_ASSIGN_OR_RETURN(int64_t spare_expert_bytes, flags.GetInt("spare-expert-bytes", -1));
  const ExpertParallelOptions ep_options{.controller = controller,
                                         .group = flags.GetString("ep-group", "decode"),
                                         .size = static_cast<int32_t>(ep_size),
                                         .rank = static_cast<int32_t>(ep_rank),
                                         .peer_timeout = absl::Milliseconds(ep_timeout_ms),
                                         .spare_expert_bytes = spare_expert_bytes};
  std::unique_ptr<ExpertParallelRank> ep;
  XPD_ASSIGN_OR_RETURN(
      runtime::ModelSession session,
      runtime::OpenModelSession(
          flags, {.kv_tokens = kv_tokens,
                  .before_load = [&](const model::Checkpoint& checkpoint,
                                     model::LoadOptions* load) -> absl::Status {
                    XPD_ASSIGN_OR_RETURN(
                        ep, ExpertParallelRank::Create(ep_options, checkpoint, load->precision));
                    load->hold_expert = [&ep](int64_t layer, int64_t expert) {
                      return ep->Holds(layer, expert);
                    };
                    return absl::OkStatus();
                  }}));

  XPD_ASSIGN_OR_RETURN(auto metrics, metrics::MetricsServer::Start(
                                         {.host = host,
                                          .port = static_cast<int>(metrics_port),
                                          .role = "decode",
                                          .rank = std::to_string(rank),
                                          .model = flags.GetString("model-id", "default")}));
  ep->Attach(session.model.get(), metrics->registry(), metrics->labels());
  runtime::DecodeScheduler scheduler(*session.model, *session.pool, {.group = ep->step_group()});
  DecodeService decode(scheduler, metrics->registry(), metrics->labels());
  transport::KvTransferService kv_transfer(&scheduler);
  std::vector<grpc::Service*> services = {&decode, &kv_transfer};
  for (grpc::Service* service : ep->services()) services.push_back(service);
  XPD_ASSIGN_OR_RETURN(auto server,
                       rpc::GrpcServer::Start({.host = host,
                                               .port = static_cast<int>(port),
                                               .services = services,
                                               .max_message_bytes = kMaxExchangeMessageBytes}));
  // What peers dial: the bound address unless the rank sits behind another
  // name (a pod's stable DNS name, a NAT).
  const std::string advertised = flags.GetString("advertise-address", server->address());
  // The router may send requests only once the whole group is connected.
  XPD_RETURN_IF_ERROR(ep->Join(advertised));
  cluster::RankAgent agent(
      {.controller_address = controller,
       .role = xpd::v1::ROLE_DECODE,
       .address = advertised,
       .rank = static_cast<int32_t>(rank),
       .load = [&decode] { return decode.Load(); },
       .ep_group = ep->group(),
       .placement_epoch = [&ep] { return ep->epoch(); },
       .expert_load = [&ep](xpd::v1::ExpertLoad* load) { ep->TakeExpertLoad(load); }});
  agent.Start();
  std::cout << "listening decode=" << server->address() << " metrics=" << metrics->address()
            << std::endl;
  base::WaitForShutdownSignal();
  ep->Shutdown();  // ends the group's streams first, so the server stops at once
  server->Shutdown();
  return absl::OkStatus();
}

}  // namespace
}  // namespace xpd::decode

int main(int argc, char** argv) {
  xpd::base::BlockShutdownSignals();
  return xpd::base::ExitStatus("decode", xpd::decode::Run({argv + 1, argv + argc}));
}
