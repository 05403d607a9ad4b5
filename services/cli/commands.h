// The `xpd` subcommands. Each takes the arguments after its name, writes its
// result to stdout and errors to stderr, and returns the process exit status.
#pragma once

#include <string>
#include <vector>

namespace xpd::cli {

int RunLogitsCommand(const std::vector<std::string>& args);
int RunGenerateCommand(const std::vector<std::string>& args);
int RunBenchCommand(const std::vector<std::string>& args);
int RunDummyModelCommand(const std::vector<std::string>& args);

}  // namespace xpd::cli
