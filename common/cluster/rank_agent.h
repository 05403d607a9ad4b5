// A rank's link to the controller: registers (role, address, rank), then
// heartbeats on an interval with a fresh load snapshot, registering again if
// the controller forgot it (restart). Runs on its own thread and never
// blocks serving: when the controller is down the rank keeps working.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "xpd/v1/cluster.grpc.pb.h"

namespace xpd::cluster {

struct RankAgentOptions {
  std::string controller_address;  // host:port
  xpd::v1::Role role = xpd::v1::ROLE_UNSPECIFIED;
  std::string address;  // this rank's gRPC address
  int32_t rank = 0;
  std::function<xpd::v1::RankLoad()> load;  // called on the agent thread
  // Expert-parallel ranks: their group, the placement epoch they serve, and
  // the expert loads counted since the previous heartbeat (agent thread).
  std::string ep_group;
  std::function<int64_t()> placement_epoch;
  std::function<void(xpd::v1::ExpertLoad*)> expert_load;
  absl::Duration interval = absl::Milliseconds(500);
};

class RankAgent {
 public:
  explicit RankAgent(RankAgentOptions options);
  ~RankAgent();  // stops the thread
  void Start();
  std::string rank_id() const;  // empty until registered

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace xpd::cluster
