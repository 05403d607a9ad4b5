#include "tests/integration/local_cluster.h"

#include <signal.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/base/status_macros.h"
#include "grpcpp/grpcpp.h"

namespace xpd::testing {
namespace {

std::string Binary(const std::string& name) { return std::string(XPD_BINARY_DIR) + "/" + name; }

const absl::Duration kStartup = absl::Seconds(120);

}  // namespace

LocalCluster::LocalCluster(LocalClusterOptions options) : options_(std::move(options)) {}

LocalCluster::~LocalCluster() { Stop(); }

absl::StatusOr<std::string> LocalCluster::SpawnAndRead(const std::string& name,
                                                       const std::vector<std::string>& argv,
                                                       const std::string& key, int* child,
                                                       std::string* line_out) {
  XPD_ASSIGN_OR_RETURN(*child, group_.Spawn(name, argv));
  XPD_ASSIGN_OR_RETURN(std::string line, group_.ReadLine(*child, kStartup));
  if (line_out != nullptr) *line_out = line;
  for (absl::string_view part : absl::StrSplit(line, ' ')) {
    if (absl::StartsWith(part, key + "=")) return std::string(part.substr(key.size() + 1));
  }
  return absl::InternalError(absl::StrCat(name, " printed '", line, "'"));
}

absl::Status LocalCluster::Start() {
  std::vector<std::string> controller_argv = {Binary("xpd-controller")};
  controller_argv.insert(controller_argv.end(), options_.controller_args.begin(),
                         options_.controller_args.end());
  XPD_ASSIGN_OR_RETURN(
      controller_, SpawnAndRead("controller", controller_argv, "controller", &controller_child_));
  int child = 0;
  const std::string threads = std::to_string(options_.threads);
  for (int r = 0; r < options_.prefill_ranks; ++r) {
    std::vector<std::string> argv = {
        Binary("xpd-prefill"), "--model", options_.model, "--controller",   controller_,
        "--threads",           threads,   "--rank",       std::to_string(r)};
    if (options_.prefill_max_step_tokens > 0) {
      argv.insert(argv.end(),
                  {"--max-step-tokens", std::to_string(options_.prefill_max_step_tokens)});
    }
    XPD_RETURN_IF_ERROR(
        SpawnAndRead(absl::StrCat("prefill-", r), argv, "prefill", &child).status());
    prefill_children_.push_back(child);
  }
  // The decode ranks join one EP group: each serves only once all have
  // joined, so start them all before reading any ready line.
  std::vector<int> decode_children;
  for (int r = 0; r < options_.decode_ranks; ++r) {
    std::vector<std::string> argv = {Binary("xpd-decode"),
                                     "--model",
                                     options_.model,
                                     "--controller",
                                     controller_,
                                     "--threads",
                                     threads,
                                     "--rank",
                                     std::to_string(r),
                                     "--ep-size",
                                     std::to_string(options_.decode_ranks)};
    if (options_.decode_kv_tokens > 0) {
      argv.insert(argv.end(), {"--kv-tokens", std::to_string(options_.decode_kv_tokens)});
    }
    if (r < static_cast<int>(options_.decode_args.size())) {
      argv.insert(argv.end(), options_.decode_args[r].begin(), options_.decode_args[r].end());
    }
    XPD_ASSIGN_OR_RETURN(child, group_.Spawn(absl::StrCat("decode-", r), argv));
    decode_children.push_back(child);
  }
  for (int r = 0; r < options_.decode_ranks; ++r) {
    XPD_ASSIGN_OR_RETURN(std::string line, group_.ReadLine(decode_children[r], kStartup));
    std::string address;
    for (absl::string_view part : absl::StrSplit(line, ' ')) {
      if (absl::StartsWith(part, "decode=")) address = std::string(part.substr(7));
    }
    if (address.empty()) {
      return absl::InternalError(absl::StrCat("decode-", r, " printed '", line, "'"));
    }
    decode_addresses_.push_back(address);
  }
  std::vector<std::string> router_argv = {Binary("xpd-router"), "--model", options_.model,
                                          "--controller", controller_};
  if (options_.http) router_argv.insert(router_argv.end(), {"--http-port", "0"});
  if (!options_.api_key.empty()) {
    router_argv.insert(router_argv.end(), {"--api-key", options_.api_key});
  }
  std::string router_line;
  XPD_ASSIGN_OR_RETURN(router_,
                       SpawnAndRead("router", router_argv, "router", &child, &router_line));
  if (options_.http) {
    for (absl::string_view part : absl::StrSplit(router_line, ' ')) {
      if (absl::StartsWith(part, "http=")) http_ = std::string(part.substr(5));
    }
    if (http_.empty())
      return absl::InternalError(absl::StrCat("router printed '", router_line, "'"));
  }
  XPD_ASSIGN_OR_RETURN(client_, client::GenerationClient::Create(router_));
  // Ready when the controller lists every rank as healthy (ranks register
  // within one heartbeat; the router polls the same list).
  auto controller = xpd::v1::Controller::NewStub(
      grpc::CreateChannel(controller_, grpc::InsecureChannelCredentials()));
  const absl::Time deadline = absl::Now() + kStartup;
  while (absl::Now() < deadline) {
    grpc::ClientContext context;
    xpd::v1::ListRanksRequest request;
    request.set_healthy_only(true);
    xpd::v1::ListRanksResponse response;
    if (controller->ListRanks(&context, request, &response).ok() &&
        response.ranks_size() >= options_.prefill_ranks + options_.decode_ranks) {
      // The router's own view refreshes every 200 ms: a request before that
      // may see no ranks, so wait for it to answer one real generation.
      xpd::v1::GenerateRequest probe;
      probe.mutable_tokens()->add_ids(1);
      probe.mutable_sampling()->set_max_tokens(1);
      probe.mutable_sampling()->set_temperature(0);
      if (client_->Generate(probe).ok()) return absl::OkStatus();
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::DeadlineExceededError("cluster did not become ready");
}

std::vector<std::string> LocalCluster::Stop() {
  if (stopped_) return {};
  stopped_ = true;
  client_.reset();
  group_.Stop();
  return group_.UncleanExits();
}

absl::StatusOr<xpd::v1::RankLoad> LocalCluster::DecodeLoad(int rank) {
  auto stub = xpd::v1::Decode::NewStub(
      grpc::CreateChannel(decode_addresses_[rank], grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  xpd::v1::DecodeStatusRequest request;
  xpd::v1::DecodeStatusResponse response;
  grpc::Status status = stub->Status(&context, request, &response);
  if (!status.ok()) return absl::UnavailableError(status.error_message());
  return response.load();
}

absl::Status LocalCluster::ReserveOnDecode(int rank, const std::string& id, int prompt,
                                           int max_tokens) {
  auto stub = xpd::v1::Decode::NewStub(
      grpc::CreateChannel(decode_addresses_[rank], grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  xpd::v1::ReserveRequest request;
  request.set_request_id(id);
  request.set_prompt_tokens(prompt);
  request.set_max_tokens(max_tokens);
  xpd::v1::ReserveResponse response;
  grpc::Status status = stub->Reserve(&context, request, &response);
  return status.ok() ? absl::OkStatus()
                     : absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                                    status.error_message());
}

void LocalCluster::ReleaseOnDecode(int rank, const std::string& id) {
  auto stub = xpd::v1::Decode::NewStub(
      grpc::CreateChannel(decode_addresses_[rank], grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  xpd::v1::ReleaseRequest request;
  request.set_request_id(id);
  xpd::v1::ReleaseResponse response;
  (void)stub->Release(&context, request, &response);
}

void LocalCluster::KillPrefill(int rank) { group_.Signal(prefill_children_[rank], SIGKILL); }

void LocalCluster::KillController() { group_.Signal(controller_child_, SIGKILL); }

absl::Status LocalCluster::RestartController() {
  // Same address, so ranks and router find it again without being told.
  const std::string port = controller_.substr(controller_.rfind(':') + 1);
  std::vector<std::string> argv = {Binary("xpd-controller"), "--port", port};
  argv.insert(argv.end(), options_.controller_args.begin(), options_.controller_args.end());
  XPD_ASSIGN_OR_RETURN(std::string address, SpawnAndRead("controller-restarted", argv, "controller",
                                                         &controller_child_));
  if (address != controller_) {
    return absl::InternalError(
        absl::StrCat("controller came back on ", address, ", not ", controller_));
  }
  return absl::OkStatus();
}

}  // namespace xpd::testing
