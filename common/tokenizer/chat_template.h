// Chat templates from tokenizer_config.json. No general Jinja engine is
// available here, so known templates are recognised (by the SHA-256 of the
// template text) and rendered by code written to reproduce them exactly;
// an unknown template is an error rather than a guess.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace xpd::tokenizer {

struct ToolCall {
  std::string type = "function";
  std::string name;
  std::string arguments;  // JSON text, used verbatim
};

struct ChatMessage {
  std::string role;                    // system, user, assistant, tool
  std::optional<std::string> content;  // null for an assistant turn with tool calls
  std::vector<ToolCall> tool_calls;
};

// Parses OpenAI-style messages ([{"role":..., "content":..., "tool_calls":[...]}]);
// errors name the message index and field.
absl::StatusOr<std::vector<ChatMessage>> ParseChatMessages(const nlohmann::json& messages);

struct ChatRenderOptions {
  bool add_generation_prompt = true;
  // kAsPlainText: added-token text inside message content is tokenized as
  // ordinary text, so user input cannot inject <｜User｜> and friends. The
  // default is the reference behaviour (recognized as tokens).
  SpecialTokenText content_special_tokens = SpecialTokenText::kRecognize;
};

// The template's output as pieces: template markup (BOS, role markers, tool
// markers, separators the template writes) and message content, in order.
struct ChatPiece {
  std::string text;
  bool from_content = false;
};

struct RenderedChat {
  std::string text;          // the pieces joined
  std::vector<int32_t> ids;  // encoded without adding BOS (the template writes it)
};

// tokenizer_config.json: BOS/EOS, add_bos_token and the chat template.
class TokenizerConfig {
 public:
  // `path` is tokenizer_config.json or a directory holding it.
  static absl::StatusOr<TokenizerConfig> Load(const std::string& path);

  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }
  bool add_bos_token() const { return add_bos_token_; }
  bool has_chat_template() const { return !chat_template_.empty(); }
  // Which known template this is ("deepseek-v3"), or empty if unknown.
  const std::string& template_name() const { return template_name_; }

  // FailedPrecondition for an unknown or missing template.
  absl::StatusOr<std::vector<ChatPiece>> RenderChat(const std::vector<ChatMessage>& messages,
                                                    bool add_generation_prompt) const;

 private:
  std::string bos_token_, eos_token_, chat_template_, template_name_;
  bool add_bos_token_ = false;
};

// Renders and encodes a conversation. With kAsPlainText, each run of text
// between template markup is encoded with SpecialTokenText::kAsPlainText.
absl::StatusOr<RenderedChat> ApplyChatTemplate(const Tokenizer& tokenizer,
                                               const TokenizerConfig& config,
                                               const std::vector<ChatMessage>& messages,
                                               const ChatRenderOptions& options);

}  // namespace xpd::tokenizer
