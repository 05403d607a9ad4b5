#include "common/base/command_flags.h"

#include <iostream>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace xpd::base {
namespace {

constexpr char kHelpPayload[] = "type.xpd/help_request";

absl::Status HelpRequest(const std::set<std::string>& value_flags,
                         const std::set<std::string>& switch_flags) {
  std::string text = "flags:\n";
  std::set<std::string> all = value_flags;
  all.insert(switch_flags.begin(), switch_flags.end());
  for (const std::string& name : all) {
    absl::StrAppend(&text, "  --", name, value_flags.count(name) ? " VALUE" : "", "\n");
  }
  absl::Status status(absl::StatusCode::kCancelled, text);
  status.SetPayload(kHelpPayload, absl::Cord("1"));
  return status;
}

}  // namespace

bool IsHelpRequest(const absl::Status& status) {
  return status.GetPayload(kHelpPayload).has_value();
}

absl::StatusOr<CommandFlags> CommandFlags::Parse(const std::vector<std::string>& args,
                                                 const std::set<std::string>& value_flags,
                                                 const std::set<std::string>& switch_flags) {
  for (const std::string& arg : args) {
    if (arg == "--help" || arg == "-h") return HelpRequest(value_flags, switch_flags);
  }
  CommandFlags flags;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg.rfind("--", 0) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "'"));
    }
    std::string name = arg.substr(2);
    std::optional<std::string> value;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (switch_flags.count(name)) {
      if (value)
        return absl::InvalidArgumentError(absl::StrCat("flag --", name, " takes no value"));
      flags.values_[name] = "true";
    } else if (value_flags.count(name)) {
      if (!value) {
        if (i + 1 >= args.size()) {
          return absl::InvalidArgumentError(absl::StrCat("flag --", name, " needs a value"));
        }
        value = args[++i];
      }
      flags.values_[name] = *value;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
  }
  return flags;
}

bool CommandFlags::Has(const std::string& name) const { return values_.count(name) > 0; }

absl::StatusOr<std::string> CommandFlags::GetString(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) return absl::InvalidArgumentError(absl::StrCat("missing --", name));
  return it->second;
}

std::string CommandFlags::GetString(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

absl::StatusOr<int64_t> CommandFlags::GetInt(const std::string& name,
                                             std::optional<int64_t> fallback) const {
  auto it = values_.find(name);
  if (it == values_.end()) {
    if (fallback) return *fallback;
    return absl::InvalidArgumentError(absl::StrCat("missing --", name));
  }
  int64_t value = 0;
  if (!absl::SimpleAtoi(it->second, &value)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, ": '", it->second, "' is not an integer"));
  }
  return value;
}

absl::StatusOr<double> CommandFlags::GetDouble(const std::string& name,
                                               std::optional<double> fallback) const {
  auto it = values_.find(name);
  if (it == values_.end()) {
    if (fallback) return *fallback;
    return absl::InvalidArgumentError(absl::StrCat("missing --", name));
  }
  double value = 0;
  if (!absl::SimpleAtod(it->second, &value)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, ": '", it->second, "' is not a number"));
  }
  return value;
}

absl::StatusOr<std::vector<int64_t>> CommandFlags::GetIntList(const std::string& name) const {
  absl::StatusOr<std::string> text = GetString(name);
  if (!text.ok()) return text.status();
  std::vector<int64_t> out;
  for (absl::string_view piece : absl::StrSplit(*text, ',')) {
    int64_t value = 0;
    if (!absl::SimpleAtoi(piece, &value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, ": '", piece, "' is not an integer"));
    }
    out.push_back(value);
  }
  return out;
}

int ExitStatus(const char* command, const absl::Status& status) {
  if (status.ok()) return 0;
  if (IsHelpRequest(status)) {
    std::cout << "usage: xpd " << command << " [flags]\n" << status.message();
    return 0;
  }
  std::cerr << "xpd " << command << ": " << status.message() << "\n";
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

}  // namespace xpd::base
