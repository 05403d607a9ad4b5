// Runs the real xpd-controller binary: it prints its one `listening` line,
// serves Register/ListRanks on the printed address, and exits 0 on SIGTERM.
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "services/controller/fake_kube_api.h"
#include "xpd/v1/cluster.grpc.pb.h"

namespace xpd::controller {
namespace {

using ::testing::MatchesRegex;

constexpr int kTimeoutMs = 20'000;

// Reads from `fd` until `stop` says so, EOF, or the timeout.
template <typename Stop>
std::string ReadUntil(int fd, Stop stop) {
  std::string out;
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(kTimeoutMs);
  while (!stop(out)) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    pollfd pfd{.fd = fd, .events = POLLIN, .revents = 0};
    if (left.count() <= 0 || poll(&pfd, 1, static_cast<int>(left.count())) <= 0) break;
    char buffer[256];
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n <= 0) break;
    out.append(buffer, n);
  }
  return out;
}

TEST(ControllerMainTest, PrintsAddressServesAndExitsOnSigterm) {
  int out_pipe[2];
  ASSERT_EQ(pipe(out_pipe), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(out_pipe[1], STDOUT_FILENO);
    close(out_pipe[0]);
    close(out_pipe[1]);
    execl(XPD_CONTROLLER_BINARY, XPD_CONTROLLER_BINARY, "--port", "0", "--metrics-port", "0",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  close(out_pipe[1]);
  const std::string line =
      ReadUntil(out_pipe[0], [](const std::string& s) { return s.find('\n') != s.npos; });
  EXPECT_THAT(line, MatchesRegex("listening controller=127\\.0\\.0\\.1:[0-9]+ "
                                 "metrics=127\\.0\\.0\\.1:[0-9]+\n"));

  const size_t begin = line.find('=') + 1;
  const std::string address = line.substr(begin, line.find(' ', begin) - begin);
  if (!address.empty()) {
    auto stub = xpd::v1::Controller::NewStub(
        grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
    grpc::ClientContext register_context;
    register_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    xpd::v1::RegisterRequest request;
    request.set_role(xpd::v1::ROLE_PREFILL);
    request.set_address("127.0.0.1:1");
    xpd::v1::RegisterResponse response;
    ASSERT_TRUE(stub->Register(&register_context, request, &response).ok());
    EXPECT_EQ(response.rank_id(), "prefill-0");
  }

  ASSERT_EQ(kill(pid, SIGTERM), 0);
  // EOF on stdout means the process is exiting; nothing else is printed.
  const std::string rest = ReadUntil(out_pipe[0], [](const std::string&) { return false; });
  EXPECT_EQ(rest, "");
  close(out_pipe[0]);
  int wstatus = 0;
  ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
  EXPECT_TRUE(WIFEXITED(wstatus));
  EXPECT_EQ(WEXITSTATUS(wstatus), 0);
}

struct Exit {
  int code = -1;
  std::string err;
};

// Runs the binary with `args` until it exits by itself (it must: each case
// here fails before serving).
Exit RunToExit(std::vector<std::string> args) {
  int err_pipe[2];
  if (pipe(err_pipe) != 0) return {};
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(err_pipe[1], STDERR_FILENO);
    close(err_pipe[0]);
    close(err_pipe[1]);
    std::vector<char*> argv = {const_cast<char*>(XPD_CONTROLLER_BINARY)};
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    execv(XPD_CONTROLLER_BINARY, argv.data());
    _exit(127);
  }
  close(err_pipe[1]);
  Exit exit;
  exit.err = ReadUntil(err_pipe[0], [](const std::string&) { return false; });
  close(err_pipe[0]);
  int wstatus = 0;
  if (waitpid(pid, &wstatus, 0) == pid && WIFEXITED(wstatus)) exit.code = WEXITSTATUS(wstatus);
  return exit;
}

TEST(ControllerMainTest, CorruptPlacementFileStopsTheStartNamingIt) {
  const std::string path =
      (std::filesystem::path(::testing::TempDir()) / "controller_main_corrupt.json").string();
  std::ofstream(path) << "{\"groups\": [";
  const Exit exit = RunToExit({"--port", "0", "--metrics-port", "0", "--placement-file", path});
  EXPECT_EQ(exit.code, 1);
  EXPECT_THAT(exit.err, ::testing::HasSubstr("placement file " + path + ": not a JSON object"));
}

TEST(ControllerMainTest, PlacementFileAndConfigMapAreMutuallyExclusive) {
  Exit exit = RunToExit({"--placement-file", "/tmp/p.json", "--placement-configmap", "xpd/p"});
  EXPECT_EQ(exit.code, 2);
  EXPECT_THAT(exit.err, ::testing::HasSubstr(
                            "--placement-file and --placement-configmap are mutually exclusive"));
  exit = RunToExit({"--kube-api-url", "http://127.0.0.1:1"});
  EXPECT_EQ(exit.code, 2);
  EXPECT_THAT(exit.err, ::testing::HasSubstr("--kube-api-url needs --placement-configmap"));
  exit = RunToExit({"--placement-configmap", "Xpd/p"});
  EXPECT_EQ(exit.code, 2);
  EXPECT_THAT(exit.err, ::testing::HasSubstr("namespace 'Xpd' is not a Kubernetes name"));
}

// A controller serving until Stop(): its stdout's `listening` line gives the address.
class RunningController {
 public:
  explicit RunningController(std::vector<std::string> args) {
    int out_pipe[2];
    if (pipe(out_pipe) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out_pipe[1], STDOUT_FILENO);
      close(out_pipe[0]);
      close(out_pipe[1]);
      std::vector<char*> argv = {const_cast<char*>(XPD_CONTROLLER_BINARY)};
      for (std::string& arg : args) argv.push_back(arg.data());
      argv.push_back(nullptr);
      execv(XPD_CONTROLLER_BINARY, argv.data());
      _exit(127);
    }
    close(out_pipe[1]);
    out_ = out_pipe[0];
    const std::string line =
        ReadUntil(out_, [](const std::string& s) { return s.find('\n') != s.npos; });
    const size_t begin = line.find("controller=");
    if (begin == std::string::npos) return;
    const size_t start = begin + std::string("controller=").size();
    address_ = line.substr(start, line.find(' ', start) - start);
  }
  ~RunningController() {
    if (pid_ > 0) Stop();
  }

  const std::string& address() const { return address_; }

  // SIGTERM; the exit status.
  int Stop() {
    kill(pid_, SIGTERM);
    int wstatus = 0;
    const bool exited = waitpid(pid_, &wstatus, 0) == pid_ && WIFEXITED(wstatus);
    pid_ = -1;
    close(out_);
    return exited ? WEXITSTATUS(wstatus) : -1;
  }

  grpc::Status GetPlacement(xpd::v1::Placement* placement) {
    auto stub = xpd::v1::Controller::NewStub(
        grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    xpd::v1::GetPlacementRequest request;
    request.set_ep_group("decode");
    request.mutable_shape()->set_num_ranks(2);
    request.mutable_shape()->set_num_experts(4);
    request.mutable_shape()->add_moe_layers(1);
    request.mutable_shape()->add_moe_layers(2);
    xpd::v1::GetPlacementResponse response;
    grpc::Status status = stub->GetPlacement(&context, request, &response);
    *placement = response.placement();
    return status;
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  std::string address_;
};

TEST(ControllerMainTest, PlacementConfigMapSurvivesARestart) {
  absl::StatusOr<std::unique_ptr<FakeKubeApi>> api =
      FakeKubeApi::Start("team-a", "xpd-placement", "secret");
  ASSERT_TRUE(api.ok()) << api.status();
  const std::string seed = "{\"version\": 1, \"groups\": {}}";
  (*api)->SetData(FakeKubeApi::Data{{"seed.json", seed}});
  const std::string token =
      (std::filesystem::path(::testing::TempDir()) / "controller_main_token").string();
  std::ofstream(token) << "secret";
  const std::vector<std::string> args = {"--port",
                                         "0",
                                         "--metrics-port",
                                         "0",
                                         "--placement-configmap",
                                         "team-a/xpd-placement",
                                         "--kube-api-url",
                                         (*api)->url(),
                                         "--kube-token-file",
                                         token,
                                         "--kube-ca-file",
                                         ""};

  xpd::v1::Placement first;
  {
    RunningController controller(args);
    ASSERT_FALSE(controller.address().empty());
    ASSERT_TRUE(controller.GetPlacement(&first).ok());
    EXPECT_EQ(controller.Stop(), 0);
  }
  const std::optional<FakeKubeApi::Data> data = (*api)->data();
  ASSERT_TRUE(data.has_value());
  EXPECT_TRUE(data->contains("placement.json"));
  EXPECT_EQ(data->at("seed.json"), seed);
  const std::vector<FakeKubeApi::Request> requests = (*api)->requests();
  ASSERT_GE(requests.size(), 2u);
  EXPECT_EQ(requests[0].method, "GET");
  EXPECT_EQ(requests[1].method, "PATCH");
  EXPECT_EQ(requests[1].content_type, "application/merge-patch+json");

  RunningController restarted(args);
  ASSERT_FALSE(restarted.address().empty());
  xpd::v1::Placement again;
  ASSERT_TRUE(restarted.GetPlacement(&again).ok());
  EXPECT_EQ(again.SerializeAsString(), first.SerializeAsString());
  EXPECT_EQ(restarted.Stop(), 0);

  // The API server refusing the read stops the start, naming the ConfigMap.
  (*api)->FailWith(403, "");
  const Exit exit = RunToExit(args);
  EXPECT_EQ(exit.code, 1);
  EXPECT_THAT(exit.err, ::testing::HasSubstr(
                            "placement ConfigMap team-a/xpd-placement: GET " + (*api)->url() +
                            "/api/v1/namespaces/team-a/configmaps/xpd-placement: HTTP 403"));
}

TEST(ControllerMainTest, RejectsAnUnknownRebalanceMode) {
  const Exit exit = RunToExit({"--rebalance", "sometimes"});
  EXPECT_EQ(exit.code, 2);
  EXPECT_THAT(exit.err, ::testing::HasSubstr("--rebalance must be auto or off"));
}

}  // namespace
}  // namespace xpd::controller
