// xpd-prefill: one prefill rank. Computes prompts in batched, chunked steps
// and ships each request's latent KV to the decode rank the router named.
//   xpd-prefill --model DIR --controller HOST:PORT [--compute f32|bf16] [--threads N]
//               [--kv-tokens N] [--max-step-tokens N] [--host H] [--port P]
//               [--metrics-port M] [--rank R] [--advertise-address HOST:PORT]
//               [--model-id NAME]
// --model-id (default "default", as the router's) labels the metrics.
// Prints "listening prefill=HOST:PORT metrics=HOST:PORT" once serving.
#include <iostream>

#include "common/base/command_flags.h"
#include "common/base/shutdown_signal.h"
#include "common/base/status_macros.h"
#include "common/cluster/rank_agent.h"
#include "common/metrics/metrics_server.h"
#include "common/rpc/grpc_server.h"
#include "common/runtime/model_session.h"
#include "common/runtime/prefill_scheduler.h"
#include "common/transport/grpc_kv_transport.h"
#include "services/prefill/prefill_service.h"

namespace xpd::prefill {
namespace {

absl::Status Run(const std::vector<std::string>& args) {
  std::set<std::string> value_flags = runtime::kModelValueFlags;
  value_flags.insert({"controller", "kv-tokens", "max-step-tokens", "host", "port", "metrics-port",
                      "rank", "advertise-address", "model-id"});
  XPD_ASSIGN_OR_RETURN(base::CommandFlags flags, base::CommandFlags::Parse(args, value_flags, {}));
  XPD_ASSIGN_OR_RETURN(std::string controller, flags.GetString("controller"));
  XPD_ASSIGN_OR_RETURN(int64_t kv_tokens, flags.GetInt("kv-tokens", 16384));
  XPD_ASSIGN_OR_RETURN(int64_t max_step_tokens, flags.GetInt("max-step-tokens", 512));
  XPD_ASSIGN_OR_RETURN(int64_t port, flags.GetInt("port", 0));
  XPD_ASSIGN_OR_RETURN(int64_t metrics_port, flags.GetInt("metrics-port", 0));
  XPD_ASSIGN_OR_RETURN(int64_t rank, flags.GetInt("rank", 0));
  const std::string host = flags.GetString("host", "127.0.0.1");
  XPD_ASSIGN_OR_RETURN(runtime::ModelSession session,
                       runtime::OpenModelSession(flags, {.kv_tokens = kv_tokens}));

  XPD_ASSIGN_OR_RETURN(auto metrics, metrics::MetricsServer::Start(
                                         {.host = host,
                                          .port = static_cast<int>(metrics_port),
                                          .role = "prefill",
                                          .rank = std::to_string(rank),
                                          .model = flags.GetString("model-id", "default")}));
  runtime::PrefillScheduler scheduler(*session.model, *session.pool,
                                      {.max_step_tokens = max_step_tokens});
  transport::GrpcKvTransport transport;
  PrefillService prefill(scheduler, transport, metrics->registry(), metrics->labels());
  XPD_ASSIGN_OR_RETURN(auto server,
                       rpc::GrpcServer::Start(
                           {.host = host, .port = static_cast<int>(port), .services = {&prefill}}));
  cluster::RankAgent agent({.controller_address = controller,
                            .role = xpd::v1::ROLE_PREFILL,
                            // What peers dial: the bound address unless the rank sits
                            // behind another name (a pod's stable DNS name, a NAT).
                            .address = flags.GetString("advertise-address", server->address()),
                            .rank = static_cast<int32_t>(rank),
                            .load = [&prefill] { return prefill.Load(); }});
  agent.Start();
  std::cout << "listening prefill=" << server->address() << " metrics=" << metrics->address()
            << std::endl;
  base::WaitForShutdownSignal();
  server->Shutdown();
  return absl::OkStatus();
}

}  // namespace
}  // namespace xpd::prefill

int main(int argc, char** argv) {
  xpd::base::BlockShutdownSignals();
  return xpd::base::ExitStatus("prefill", xpd::prefill::Run({argv + 1, argv + argc}));
}
