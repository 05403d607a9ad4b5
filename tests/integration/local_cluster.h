// Test harness: a real cluster of processes on loopback (ephemeral ports):
// controller, prefill ranks, decode ranks and router, started from the built
// binaries, reached only through the client SDK and the controller API.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/client/generation_client.h"
#include "services/cli/process_group.h"
#include "xpd/v1/cluster.grpc.pb.h"

namespace xpd::testing {

struct LocalClusterOptions {
  std::string model;  // checkpoint directory
  int prefill_ranks = 1;
  int decode_ranks = 1;
  int64_t decode_kv_tokens = 0;  // 0 = the binary's default
  int64_t prefill_max_step_tokens = 0;
  int threads = 1;      // --threads of every prefill and decode rank (0 = one per core)
  bool http = false;    // the router's OpenAI-compatible endpoint (--http-port 0)
  std::string api_key;  // its --api-key (empty = none)
  // Extra flags for the controller (placement, rebalancing) and for each
  // decode rank (by rank); the decode ranks always form one EP group.
  std::vector<std::string> controller_args;
  std::vector<std::vector<std::string>> decode_args;
};

class LocalCluster {
 public:
  explicit LocalCluster(LocalClusterOptions options);
  ~LocalCluster();  // stops every process

  // Starts the processes and waits until all ranks are healthy.
  absl::Status Start();
  // SIGTERM to all; the names of processes that did not exit cleanly.
  std::vector<std::string> Stop();

  const std::string& router() const { return router_; }
  const std::string& controller() const { return controller_; }
  const std::string& http() const { return http_; }  // "host:port" when options.http
  client::GenerationClient& client() { return *client_; }
  // The decode ranks' load, straight from their Decode.Status.
  absl::StatusOr<xpd::v1::RankLoad> DecodeLoad(int rank);
  void KillPrefill(int rank);
  // Stops (SIGKILL) or restarts the controller on the same port and flags.
  void KillController();
  absl::Status RestartController();
  // Reserves (or releases) KV directly on a decode rank, as the router does.
  absl::Status ReserveOnDecode(int rank, const std::string& id, int prompt, int max_tokens);
  void ReleaseOnDecode(int rank, const std::string& id);

 private:
  absl::StatusOr<std::string> SpawnAndRead(const std::string& name,
                                           const std::vector<std::string>& argv,
                                           const std::string& key, int* child,
                                           std::string* line_out = nullptr);
  LocalClusterOptions options_;
  cli::ProcessGroup group_;
  std::string controller_, router_, http_;
  std::vector<int> prefill_children_;
  int controller_child_ = -1;
  std::vector<std::string> decode_addresses_;
  std::unique_ptr<client::GenerationClient> client_;
  bool stopped_ = false;
};

}  // namespace xpd::testing
