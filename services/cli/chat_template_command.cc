// xpd chat-template --tokenizer DIR [--content-special-tokens recognize|plain]
// Renders conversations with the model's chat template and encodes them: reads
// one {"messages": [...], "add_generation_prompt": bool} per stdin line, writes
// one {"text": "...", "ids": [...]} per stdout line. Other tools call this
// command line as is, so its flags and formats are stable.
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/tokenizer/chat_template.h"
#include "common/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"
#include "services/cli/command_flags.h"
#include "services/cli/commands.h"

namespace xpd::cli {
namespace {

using nlohmann::json;

constexpr char kUsage[] =
    "usage: xpd chat-template --tokenizer DIR [--content-special-tokens recognize|plain]\n"
    "Reads JSON lines {\"messages\": [...], \"add_generation_prompt\": true|false} on stdin\n"
    "and writes {\"text\": \"...\", \"ids\": [...]} lines: the conversation rendered with\n"
    "DIR/tokenizer_config.json's chat template and encoded with DIR/tokenizer.json.\n"
    "  --content-special-tokens recognize  added-token text inside messages becomes those\n"
    "                                      tokens, as the reference does (default)\n"
    "  --content-special-tokens plain      it is encoded as plain text, so message content\n"
    "                                      cannot inject <｜User｜> and the like\n";

int UsageError(const std::string& message) {
  std::cerr << "xpd chat-template: " << message << "\n" << kUsage;
  return 2;
}

struct Session {
  std::unique_ptr<tokenizer::Tokenizer> tokenizer;
  tokenizer::TokenizerConfig config;
  tokenizer::ChatRenderOptions options;
};

// One input line to one output line. Keys other than messages and
// add_generation_prompt are ignored, so reference files can be fed directly.
absl::StatusOr<std::string> ProcessLine(const std::string& line, const Session& session) {
  json request;
  try {
    request = json::parse(line);
  } catch (const json::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat("not valid JSON: ", e.what()));
  }
  if (!request.is_object()) return absl::InvalidArgumentError("expected a JSON object");
  auto messages = request.find("messages");
  if (messages == request.end()) return absl::InvalidArgumentError("messages: missing");
  tokenizer::ChatRenderOptions options = session.options;
  // Absent means false, as in transformers' apply_chat_template.
  options.add_generation_prompt = false;
  if (auto flag = request.find("add_generation_prompt");
      flag != request.end() && !flag->is_null()) {
    if (!flag->is_boolean()) {
      return absl::InvalidArgumentError("add_generation_prompt: expected true or false");
    }
    options.add_generation_prompt = flag->get<bool>();
  }
  XPD_ASSIGN_OR_RETURN(std::vector<tokenizer::ChatMessage> parsed,
                       tokenizer::ParseChatMessages(*messages));
  XPD_ASSIGN_OR_RETURN(
      tokenizer::RenderedChat rendered,
      tokenizer::ApplyChatTemplate(*session.tokenizer, session.config, parsed, options));
  // ordered_json keeps "text" before "ids", the documented layout.
  const nlohmann::ordered_json out = {{"text", rendered.text}, {"ids", rendered.ids}};
  return out.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace

int RunChatTemplateCommand(const std::vector<std::string>& args) {
  auto flags = CommandFlags::Parse(args, {"tokenizer", "content-special-tokens"}, {"help"});
  if (!flags.ok()) return UsageError(std::string(flags.status().message()));
  if (flags->Has("help")) {
    std::cout << kUsage;
    return 0;
  }
  auto dir = flags->GetString("tokenizer");
  if (!dir.ok()) return UsageError(std::string(dir.status().message()));
  Session session;
  const std::string mode = flags->GetString("content-special-tokens", "recognize");
  if (mode == "plain") {
    session.options.content_special_tokens = tokenizer::SpecialTokenText::kAsPlainText;
  } else if (mode != "recognize") {
    return UsageError(
        absl::StrCat("--content-special-tokens: expected recognize or plain, got '", mode, "'"));
  }

  // The config first: an unknown or missing template fails before the
  // (slower) tokenizer load and before any input is read.
  // DIR is the contract; a tokenizer.json path also works, with the config beside it.
  std::filesystem::path config_path = *dir;
  if (std::error_code error; std::filesystem::is_regular_file(config_path, error)) {
    config_path = config_path.parent_path() / "tokenizer_config.json";
  }
  auto config = tokenizer::TokenizerConfig::Load(config_path.string());
  if (!config.ok()) {
    std::cerr << "xpd chat-template: " << config.status().message() << "\n";
    return 1;
  }
  if (auto probe = config->RenderChat({}, false); !probe.ok()) {
    std::cerr << "xpd chat-template: " << *dir << ": " << probe.status().message() << "\n";
    return 1;
  }
  auto loaded = tokenizer::Tokenizer::Load(*dir);
  if (!loaded.ok()) {
    std::cerr << "xpd chat-template: " << loaded.status().message() << "\n";
    return 1;
  }
  session.config = *std::move(config);
  session.tokenizer = *std::move(loaded);

  std::ios::sync_with_stdio(false);
  std::string line;
  for (int64_t number = 1;; ++number) {
    // Flush before a read that may block, so a caller that writes one line
    // and waits for its answer gets it, while batches are still written in bulk.
    if (std::cin.rdbuf()->in_avail() <= 0) std::cout.flush();
    if (!std::getline(std::cin, line)) break;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank line
    absl::StatusOr<std::string> out = ProcessLine(line, session);
    if (!out.ok()) {
      std::cout.flush();  // the answers so far come out before the error
      std::cerr << "xpd chat-template: line " << number << ": " << out.status().message() << "\n";
      return 1;
    }
    std::cout << *out << "\n";
  }
  std::cout.flush();
  return 0;
}

}  // namespace xpd::cli
