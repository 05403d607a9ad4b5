// `xpd tokenize` and `xpd detokenize`: JSON lines in on stdin, one JSON line
// out per input line on stdout, in order. Other tools call these exactly as
// the usage says, so the formats are stable.
#include <cstdint>
#include <iostream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "common/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"
#include "services/cli/command_flags.h"
#include "services/cli/commands.h"

namespace xpd::cli {
namespace {

using Json = nlohmann::json;
using tokenizer::Tokenizer;

constexpr char kTokenizeUsage[] =
    "usage: xpd tokenize --tokenizer DIR_OR_FILE\n"
    "Reads JSON lines {\"text\": \"...\"} from stdin and writes one line {\"ids\": [...]} per\n"
    "input line (no BOS added), in order. Added-token text (e.g. <｜User｜>) becomes that\n"
    "token, as in Hugging Face. DIR holds tokenizer.json; blank lines are skipped.\n";
constexpr char kDetokenizeUsage[] =
    "usage: xpd detokenize --tokenizer DIR_OR_FILE [--skip-special-tokens]\n"
    "Reads JSON lines {\"ids\": [...]} from stdin and writes one line {\"text\": \"...\"} per\n"
    "input line, in order. Ids with no token are dropped; invalid UTF-8 becomes U+FFFD.\n";

int UsageError(const std::string& command, const char* usage, const std::string& message) {
  std::cerr << "xpd " << command << ": " << message << "\n" << usage;
  return 2;
}

// Parses flags and loads the tokenizer; on failure prints why and sets
// *exit_code (2 for usage errors, 1 for a tokenizer that does not load).
std::unique_ptr<Tokenizer> Setup(const std::string& command, const char* usage,
                                 const std::vector<std::string>& args,
                                 const std::set<std::string>& switches, bool* skip_special,
                                 int* exit_code) {
  absl::StatusOr<CommandFlags> flags = CommandFlags::Parse(args, {"tokenizer"}, switches);
  if (!flags.ok()) {
    *exit_code = UsageError(command, usage, std::string(flags.status().message()));
    return nullptr;
  }
  if (flags->Has("help")) {
    std::cout << usage;
    *exit_code = 0;
    return nullptr;
  }
  absl::StatusOr<std::string> path = flags->GetString("tokenizer");
  if (!path.ok()) {
    *exit_code = UsageError(command, usage, "--tokenizer DIR_OR_FILE is required");
    return nullptr;
  }
  if (skip_special != nullptr) *skip_special = flags->Has("skip-special-tokens");
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(*path);
  if (!tokenizer.ok()) {
    std::cerr << "xpd " << command << ": " << tokenizer.status().message() << "\n";
    *exit_code = 1;
    return nullptr;
  }
  return *std::move(tokenizer);
}

// Converts stdin line by line. Stops at the first bad line with an error
// naming its number (exit 1); lines before it have been written.
int ProcessLines(const std::string& command,
                 absl::FunctionRef<absl::StatusOr<Json>(const Json&)> convert) {
  std::ios::sync_with_stdio(false);
  std::string line;
  int64_t number = 0;
  while (true) {
    // Flush before a read that may block, so a caller that writes one line
    // and waits for the answer gets it; batches still write in bulk.
    if (std::cin.rdbuf()->in_avail() <= 0) std::cout.flush();
    if (!std::getline(std::cin, line)) break;
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    Json in;
    try {
      in = Json::parse(line);
    } catch (const Json::parse_error& e) {
      std::cerr << "xpd " << command << ": line " << number << ": invalid JSON: " << e.what()
                << "\n";
      return 1;
    }
    absl::StatusOr<Json> out = convert(in);
    if (!out.ok()) {
      std::cerr << "xpd " << command << ": line " << number << ": " << out.status().message()
                << "\n";
      return 1;
    }
    std::cout << out->dump(-1, ' ', false, Json::error_handler_t::replace) << '\n';
  }
  std::cout.flush();
  if (std::cin.bad() || !std::cout) {
    std::cerr << "xpd " << command << ": I/O error\n";
    return 1;
  }
  return 0;
}

}  // namespace

int RunTokenizeCommand(const std::vector<std::string>& args) {
  int exit_code = 0;
  std::unique_ptr<Tokenizer> tok =
      Setup("tokenize", kTokenizeUsage, args, {"help"}, nullptr, &exit_code);
  if (tok == nullptr) return exit_code;
  return ProcessLines("tokenize", [&](const Json& in) -> absl::StatusOr<Json> {
    if (!in.is_object() || !in.contains("text") || !in["text"].is_string()) {
      return absl::InvalidArgumentError("expected an object {\"text\": \"...\"}");
    }
    absl::StatusOr<std::vector<int32_t>> ids = tok->Encode(in["text"].get<std::string>());
    if (!ids.ok()) return ids.status();
    return Json{{"ids", *ids}};
  });
}

int RunDetokenizeCommand(const std::vector<std::string>& args) {
  int exit_code = 0;
  bool skip_special = false;
  std::unique_ptr<Tokenizer> tok =
      Setup("detokenize", kDetokenizeUsage, args, {"help", "skip-special-tokens"}, &skip_special,
            &exit_code);
  if (tok == nullptr) return exit_code;
  return ProcessLines("detokenize", [&](const Json& in) -> absl::StatusOr<Json> {
    if (!in.is_object() || !in.contains("ids") || !in["ids"].is_array()) {
      return absl::InvalidArgumentError("expected an object {\"ids\": [...]}");
    }
    const Json& list = in["ids"];
    std::vector<int32_t> ids;
    ids.reserve(list.size());
    for (size_t i = 0; i < list.size(); ++i) {
      const Json& v = list[i];
      const bool fits =
          v.is_number_integer() &&
          (v.is_number_unsigned() ? v.get<uint64_t>() <= INT32_MAX
                                  : v.get<int64_t>() >= INT32_MIN && v.get<int64_t>() <= INT32_MAX);
      if (!fits) {
        return absl::InvalidArgumentError("ids[" + std::to_string(i) + "] is " + v.dump() +
                                          ", not a 32-bit integer");
      }
      ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
    }
    return Json{{"text", tok->Decode(ids, skip_special)}};
  });
}

}  // namespace xpd::cli
