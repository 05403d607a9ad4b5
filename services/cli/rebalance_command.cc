// xpd rebalance --controller HOST:Q [--ep-group NAME] [--dry-run]
//               [--format text|json] [--timeout SECONDS]
// Asks the controller to rebalance the EP group's experts now (ignoring the
// trigger threshold and hysteresis, not the cap on bytes moved) and prints
// the outcome: committed, aborted, skipped; with --dry-run only the plan:
// planned or skipped. One line of text by default; --format json prints one
// object (a stable interface for scripts):
//   {"outcome", "reason", "epoch", "current_balance", "predicted_balance",
//    "bytes_to_move", "duration_seconds", "dry_run"}
// Exits 1 when the rollout aborted or the call failed (errors on stderr).
// --timeout (default 600 s) covers the rollout: every rank loads its new
// experts before the group switches.
#include <iostream>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "common/base/status_macros.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"
#include "services/cli/commands.h"
#include "xpd/v1/cluster.grpc.pb.h"

namespace xpd::cli {
namespace {

absl::Status RunRebalance(const std::vector<std::string>& args) {
  XPD_ASSIGN_OR_RETURN(
      CommandFlags flags,
      CommandFlags::Parse(args, {"controller", "ep-group", "format", "timeout"}, {"dry-run"}));
  XPD_ASSIGN_OR_RETURN(const std::string controller, flags.GetString("controller"));
  const std::string format = flags.GetString("format", "text");
  if (format != "text" && format != "json") {
    return absl::InvalidArgumentError("--format must be text or json");
  }
  XPD_ASSIGN_OR_RETURN(const double timeout, flags.GetDouble("timeout", 600));
  if (!(timeout > 0)) return absl::InvalidArgumentError("--timeout must be > 0 seconds");
  const bool dry_run = flags.Has("dry-run");

  auto stub = xpd::v1::Controller::NewStub(
      grpc::CreateChannel(controller, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(timeout)));
  xpd::v1::RebalanceRequest request;
  request.set_ep_group(flags.GetString("ep-group", ""));
  request.set_dry_run(dry_run);
  xpd::v1::RebalanceResponse response;
  const grpc::Status status = stub->Rebalance(&context, request, &response);
  if (!status.ok()) {
    const auto code = static_cast<absl::StatusCode>(status.error_code());
    return absl::Status(code, absl::StrCat("controller ", controller,
                                           ": Rebalance: ", absl::StatusCodeToString(code), ": ",
                                           status.error_message()));
  }

  if (format == "json") {
    const nlohmann::json out = {{"outcome", response.outcome()},
                                {"reason", response.reason()},
                                {"epoch", response.epoch()},
                                {"current_balance", response.current_balance()},
                                {"predicted_balance", response.predicted_balance()},
                                {"bytes_to_move", response.bytes_to_move()},
                                {"duration_seconds", response.duration_seconds()},
                                {"dry_run", dry_run}};
    std::cout << out.dump() << "\n";
  } else {
    std::cout << absl::StrFormat(
        "%s: epoch %d, balance %.4f -> %.4f, %d bytes to move, %.3f s: %s\n", response.outcome(),
        response.epoch(), response.current_balance(), response.predicted_balance(),
        response.bytes_to_move(), response.duration_seconds(), response.reason());
  }
  if (response.outcome() == "aborted") {
    return absl::AbortedError(absl::StrCat("rollout aborted: ", response.reason()));
  }
  return absl::OkStatus();
}

}  // namespace

int RunRebalanceCommand(const std::vector<std::string>& args) {
  return ExitStatus("rebalance", RunRebalance(args));
}

}  // namespace xpd::cli
