// Flag parsing for `xpd <command> --flag value ...`. Every command declares
// the flags it knows; unknown flags, missing values and malformed numbers are
// errors naming the flag, so typos never pass silently. `--help` (or `-h`)
// anywhere is a help request: Parse returns it as a status that ExitStatus
// prints as the command's flag list on stdout, with exit status 0.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace xpd::base {

class CommandFlags {
 public:
  // `value_flags` take a value (`--name v` or `--name=v`); `switch_flags` take none.
  // With --help or -h, the status is a help request (see IsHelpRequest).
  static absl::StatusOr<CommandFlags> Parse(const std::vector<std::string>& args,
                                            const std::set<std::string>& value_flags,
                                            const std::set<std::string>& switch_flags);

  bool Has(const std::string& name) const;  // given on the command line
  absl::StatusOr<std::string> GetString(const std::string& name) const;  // required
  std::string GetString(const std::string& name, const std::string& fallback) const;
  absl::StatusOr<int64_t> GetInt(const std::string& name, std::optional<int64_t> fallback) const;
  absl::StatusOr<double> GetDouble(const std::string& name, std::optional<double> fallback) const;
  // "5,17,42" -> {5, 17, 42}
  absl::StatusOr<std::vector<int64_t>> GetIntList(const std::string& name) const;

 private:
  std::map<std::string, std::string> values_;
};

// Whether `status` is Parse's answer to --help; its message lists the flags.
bool IsHelpRequest(const absl::Status& status);

// Prints "xpd <command>: <message>" to stderr for a failed command and returns
// its exit status: 0 on success, 2 for invalid arguments, 1 otherwise. A help
// request prints "usage: xpd <command> [flags]" and the flag list to stdout
// and returns 0.
int ExitStatus(const char* command, const absl::Status& status);

}  // namespace xpd::base
