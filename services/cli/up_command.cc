// xpd up --model DIR|default --router-port P --controller-port Q --prefill-ranks N
//        --decode-ranks M [--compute f32|bf16] [--tokenizer DIR] [--threads T]
//        [--http-port H [--api-key KEY]] [--redundant-experts R] [--rebalance auto|off]
// The M decode ranks form one expert-parallel group: each holds its share
// of the routed experts (plus R redundant slots spread over the group), and
// with --rebalance auto the controller moves experts as load demands.
// Starts a local cluster as separate processes on loopback (controller,
// prefill ranks, decode ranks, router), prints "ready router=HOST:P" once
// every rank is healthy (followed by " http=HOST:H" when --http-port enables
// the router's OpenAI-compatible endpoint; 0 = a free port), and stops
// everything on SIGINT/SIGTERM.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <iostream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/base/command_flags.h"
#include "common/base/status_macros.h"
#include "common/model/dummy_checkpoint.h"
#include "grpcpp/grpcpp.h"
#include "services/cli/commands.h"
#include "services/cli/process_group.h"
#include "xpd/v1/cluster.grpc.pb.h"

namespace xpd::cli {
namespace {

// SIGINT/SIGTERM stop the cluster; SIGCHLD tells that a process died.
sigset_t SupervisedSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGCHLD);
  return set;
}

std::string SiblingBinary(const std::string& name) {
  return (std::filesystem::read_symlink("/proc/self/exe").parent_path() / name).string();
}

// "listening router=127.0.0.1:5000 metrics=..." -> value of `key`.
absl::StatusOr<std::string> Field(const std::string& line, const std::string& key) {
  for (absl::string_view part : absl::StrSplit(line, ' ')) {
    if (absl::StartsWith(part, key + "=")) return std::string(part.substr(key.size() + 1));
  }
  return absl::InternalError(absl::StrCat("unexpected startup line: '", line, "'"));
}

// The built-in default model: DeepSeek-V3's architecture and tokenizer with
// dummy weights, written once into the user's cache.
absl::StatusOr<std::string> DefaultModelDir() {
  const char* cache = std::getenv("XPD_CACHE_DIR");
  const char* home = std::getenv("HOME");
  const std::string root = cache ? cache : absl::StrCat(home ? home : "/tmp", "/.cache/xpd");
  const std::string dir = root + "/models/default";
  if (std::filesystem::exists(dir + "/config.json")) return dir;
  std::cerr << "writing the built-in default model (dummy weights) to " << dir << "\n";
  // stdout of `xpd up` carries only the ready line: the writer's summary goes to stderr.
  std::streambuf* stdout_buffer = std::cout.rdbuf(std::cerr.rdbuf());
  const int status = RunDummyModelCommand({"--preset", "default", "--out", dir});
  std::cout.rdbuf(stdout_buffer);
  if (status != 0) return absl::InternalError("could not write the default model");
  return dir;
}

absl::Status WaitForHealthyRanks(const std::string& controller, int prefill, int decode,
                                 ProcessGroup& group, absl::Duration timeout) {
  auto stub = xpd::v1::Controller::NewStub(
      grpc::CreateChannel(controller, grpc::InsecureChannelCredentials()));
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (std::string dead = group.ExitedChild(); !dead.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(dead, " exited during startup"));
    }
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
    xpd::v1::ListRanksRequest request;
    request.set_healthy_only(true);
    xpd::v1::ListRanksResponse response;
    if (stub->ListRanks(&context, request, &response).ok()) {
      int have_prefill = 0, have_decode = 0;
      for (const auto& rank : response.ranks()) {
        have_prefill += rank.role() == xpd::v1::ROLE_PREFILL;
        have_decode += rank.role() == xpd::v1::ROLE_DECODE;
      }
      if (have_prefill >= prefill && have_decode >= decode) return absl::OkStatus();
    }
    // Registration happens within one heartbeat interval; poll at that pace.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return absl::DeadlineExceededError("ranks did not become healthy in time");
}

absl::Status RunUp(const std::vector<std::string>& args) {
  XPD_ASSIGN_OR_RETURN(
      base::CommandFlags flags,
      base::CommandFlags::Parse(
          args,
          {"model", "router-port", "controller-port", "prefill-ranks", "decode-ranks", "compute",
           "tokenizer", "threads", "host", "kv-tokens", "startup-timeout", "http-port", "api-key",
           "redundant-experts", "rebalance"},
          {}));
  std::string model = flags.GetString("model", "default");
  XPD_ASSIGN_OR_RETURN(int64_t router_port, flags.GetInt("router-port", 0));
  XPD_ASSIGN_OR_RETURN(int64_t controller_port, flags.GetInt("controller-port", 0));
  XPD_ASSIGN_OR_RETURN(int64_t prefill_ranks, flags.GetInt("prefill-ranks", 1));
  XPD_ASSIGN_OR_RETURN(int64_t decode_ranks, flags.GetInt("decode-ranks", 1));
  XPD_ASSIGN_OR_RETURN(int64_t startup_seconds, flags.GetInt("startup-timeout", 300));
  const int64_t cores = std::max(1u, std::thread::hardware_concurrency());
  XPD_ASSIGN_OR_RETURN(
      int64_t threads,
      flags.GetInt("threads", std::max<int64_t>(1, cores / (prefill_ranks + decode_ranks))));
  const std::string compute = flags.GetString("compute", "f32");
  const std::string host = flags.GetString("host", "127.0.0.1");
  if (prefill_ranks < 1 || decode_ranks < 1 || prefill_ranks > 64 || decode_ranks > 64) {
    return absl::InvalidArgumentError("--prefill-ranks and --decode-ranks must be in [1, 64]");
  }
  XPD_ASSIGN_OR_RETURN(int64_t redundant_experts, flags.GetInt("redundant-experts", 0));
  const std::string rebalance = flags.GetString("rebalance", "off");
  if (rebalance != "auto" && rebalance != "off") {
    return absl::InvalidArgumentError(
        absl::StrCat("--rebalance: '", rebalance, "' is not one of auto, off"));
  }
  if (redundant_experts < 0) {
    return absl::InvalidArgumentError("--redundant-experts must be >= 0");
  }
  if (model == "default") {
    XPD_ASSIGN_OR_RETURN(model, DefaultModelDir());
  }
  if (!std::filesystem::exists(model + "/config.json")) {
    return absl::InvalidArgumentError(absl::StrCat("--model: no config.json in ", model));
  }

  ProcessGroup group;
  const absl::Duration startup = absl::Seconds(startup_seconds);
  XPD_ASSIGN_OR_RETURN(
      int controller_child,
      group.Spawn("controller", {SiblingBinary("xpd-controller"), "--host", host, "--port",
                                 std::to_string(controller_port), "--redundant-experts",
                                 std::to_string(redundant_experts), "--rebalance", rebalance}));
  XPD_ASSIGN_OR_RETURN(std::string line, group.ReadLine(controller_child, startup));
  XPD_ASSIGN_OR_RETURN(std::string controller, Field(line, "controller"));
  std::cerr << line << "\n";  // the controller's gRPC and metrics addresses

  const std::vector<std::string> model_flags = {"--model", model,       "--compute",
                                                compute,   "--threads", std::to_string(threads)};
  std::vector<int> ranks;
  for (const auto& [role, count] :
       {std::pair{"prefill", prefill_ranks}, {"decode", decode_ranks}}) {
    for (int64_t r = 0; r < count; ++r) {
      std::vector<std::string> argv = {SiblingBinary(std::string("xpd-") + role),
                                       "--controller",
                                       controller,
                                       "--host",
                                       host,
                                       "--rank",
                                       std::to_string(r)};
      argv.insert(argv.end(), model_flags.begin(), model_flags.end());
      if (flags.Has("kv-tokens")) {
        argv.insert(argv.end(), {"--kv-tokens", flags.GetString("kv-tokens", "")});
      }
      if (std::string(role) == "decode") {
        argv.insert(argv.end(), {"--ep-size", std::to_string(decode_ranks)});
      }
      XPD_ASSIGN_OR_RETURN(int child, group.Spawn(absl::StrCat(role, "-", r), argv));
      ranks.push_back(child);
    }
  }
  for (int child : ranks) {
    XPD_ASSIGN_OR_RETURN(std::string rank_line, group.ReadLine(child, startup));
    std::cerr << rank_line << "\n";
  }
  std::vector<std::string> router_argv = {SiblingBinary("xpd-router"),
                                          "--model",
                                          model,
                                          "--controller",
                                          controller,
                                          "--host",
                                          host,
                                          "--port",
                                          std::to_string(router_port)};
  if (flags.Has("tokenizer")) {
    router_argv.insert(router_argv.end(), {"--tokenizer", flags.GetString("tokenizer", "")});
  }
  if (flags.Has("http-port")) {
    XPD_ASSIGN_OR_RETURN(int64_t http_port, flags.GetInt("http-port", 0));
    router_argv.insert(router_argv.end(), {"--http-port", std::to_string(http_port)});
  }
  if (flags.Has("api-key")) {
    router_argv.insert(router_argv.end(), {"--api-key", flags.GetString("api-key", "")});
  }
  XPD_ASSIGN_OR_RETURN(int router_child, group.Spawn("router", router_argv));
  XPD_ASSIGN_OR_RETURN(std::string router_line, group.ReadLine(router_child, startup));
  XPD_ASSIGN_OR_RETURN(std::string router, Field(router_line, "router"));
  XPD_RETURN_IF_ERROR(WaitForHealthyRanks(controller, static_cast<int>(prefill_ranks),
                                          static_cast<int>(decode_ranks), group, startup));
  std::string http;
  if (flags.Has("http-port")) {
    XPD_ASSIGN_OR_RETURN(http, Field(router_line, "http"));
  }
  std::cout << "ready router=" << router << (http.empty() ? "" : " http=" + http) << std::endl;
  std::cerr << "serving; metrics of the router: " << router_line << "\n"
            << "Ctrl-C stops the cluster\n";

  // Until Ctrl-C / SIGTERM, or until one of the processes dies.
  const sigset_t signals = SupervisedSignals();
  while (true) {
    int signal = 0;
    if (sigwait(&signals, &signal) != 0) continue;
    if (signal != SIGCHLD) break;
    if (std::string dead = group.ExitedChild(); !dead.empty()) {
      group.Stop();
      return absl::InternalError(absl::StrCat(dead, " exited; stopped the cluster"));
    }
  }
  group.Stop();
  std::cerr << "stopped\n";
  return absl::OkStatus();
}

}  // namespace

int RunUpCommand(const std::vector<std::string>& args) {
  // Blocked before any thread starts, so only sigwait sees them.
  const sigset_t signals = SupervisedSignals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return ExitStatus("up", RunUp(args));
}

}  // namespace xpd::cli
