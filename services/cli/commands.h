// The `xpd` subcommands. Each takes the arguments after its name, writes its
// result to stdout and errors to stderr, and returns the process exit status.
#pragma once

#include <string>
#include <vector>

#include "services/cli/command_flags.h"

namespace xpd::cli {

int RunLogitsCommand(const std::vector<std::string>& args);
int RunGenerateCommand(const std::vector<std::string>& args);
int RunBenchCommand(const std::vector<std::string>& args);
int RunDummyModelCommand(const std::vector<std::string>& args);
int RunUpCommand(const std::vector<std::string>& args);

// `xpd generate --router ...`: the same request through a cluster's router.
absl::Status RunRemoteGenerate(const CommandFlags& flags);
int RunTokenizeCommand(const std::vector<std::string>& args);
int RunDetokenizeCommand(const std::vector<std::string>& args);
int RunChatTemplateCommand(const std::vector<std::string>& args);
// `xpd status` / `xpd rebalance`: the controller's view of the cluster and
// its EP groups' expert placement; an operator-forced rebalance.
int RunStatusCommand(const std::vector<std::string>& args);
int RunRebalanceCommand(const std::vector<std::string>& args);

}  // namespace xpd::cli
