// xpd-decode: one decode rank. Holds the whole model (all experts: expert
// parallelism comes with EP groups), a paged latent KV pool, and runs
// continuous batching over the requests the router announces.
//   xpd-decode --model DIR --controller HOST:PORT [--compute f32|bf16] [--threads N]
//              [--kv-tokens N] [--host H] [--port P] [--metrics-port M] [--rank R]
//              [--advertise-address HOST:PORT]
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

namespace xpd::decode {
namespace {

absl::Status Run(const std::vector<std::string>& args) {
  std::set<std::string> value_flags = runtime::kModelValueFlags;
  value_flags.insert(
      {"controller", "kv-tokens", "host", "port", "metrics-port", "rank", "advertise-address"});
  XPD_ASSIGN_OR_RETURN(base::CommandFlags flags, base::CommandFlags::Parse(args, value_flags, {}));
  XPD_ASSIGN_OR_RETURN(std::string controller, flags.GetString("controller"));
  XPD_ASSIGN_OR_RETURN(int64_t kv_tokens, flags.GetInt("kv-tokens", 32768));
  XPD_ASSIGN_OR_RETURN(int64_t port, flags.GetInt("port", 0));
  XPD_ASSIGN_OR_RETURN(int64_t metrics_port, flags.GetInt("metrics-port", 0));
  XPD_ASSIGN_OR_RETURN(int64_t rank, flags.GetInt("rank", 0));
  const std::string host = flags.GetString("host", "127.0.0.1");
  XPD_ASSIGN_OR_RETURN(runtime::ModelSession session,
                       runtime::OpenModelSession(flags, {.kv_tokens = kv_tokens}));

  XPD_ASSIGN_OR_RETURN(auto metrics,
                       metrics::MetricsServer::Start({.host = host,
                                                      .port = static_cast<int>(metrics_port),
                                                      .role = "decode",
                                                      .rank = std::to_string(rank),
                                                      .model = session.checkpoint->dir()}));
  runtime::DecodeScheduler scheduler(*session.model, *session.pool);
  DecodeService decode(scheduler, metrics->registry(), metrics->labels());
  transport::KvTransferService kv_transfer(&scheduler);
  XPD_ASSIGN_OR_RETURN(auto server, rpc::GrpcServer::Start({.host = host,
                                                            .port = static_cast<int>(port),
                                                            .services = {&decode, &kv_transfer}}));
  cluster::RankAgent agent({.controller_address = controller,
                            .role = xpd::v1::ROLE_DECODE,
                            // What peers dial: the bound address unless the rank sits
                            // behind another name (a pod's stable DNS name, a NAT).
                            .address = flags.GetString("advertise-address", server->address()),
                            .rank = static_cast<int32_t>(rank),
                            .load = [&decode] { return decode.Load(); }});
  agent.Start();
  std::cout << "listening decode=" << server->address() << " metrics=" << metrics->address()
            << std::endl;
  base::WaitForShutdownSignal();
  server->Shutdown();
  return absl::OkStatus();
}

}  // namespace
}  // namespace xpd::decode

int main(int argc, char** argv) {
  xpd::base::BlockShutdownSignals();
  return xpd::base::ExitStatus("decode", xpd::decode::Run({argv + 1, argv + argc}));
}
