#include "common/tokenizer/deepseek_v3_chat_template.h"

#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"

namespace xpd::tokenizer::internal {
namespace {

// The template's literals. Markup is everything the template writes itself;
// anything taken from a message (content, tool type, name, arguments) is
// content, so callers can tokenize it without recognising added tokens.
constexpr char kUser[] = "<｜User｜>";
constexpr char kAssistant[] = "<｜Assistant｜>";
constexpr char kEos[] = "<｜end▁of▁sentence｜>";
constexpr char kFirstCallOpen[] = "<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>";
constexpr char kLaterCallOpen[] = "\n<｜tool▁call▁begin｜>";
constexpr char kToolSep[] = "<｜tool▁sep｜>";
constexpr char kArgumentsOpen[] = "\n```json\n";
constexpr char kCallClose[] = "\n```<｜tool▁call▁end｜>";
constexpr char kCallsEnd[] = "<｜tool▁calls▁end｜><｜end▁of▁sentence｜>";
constexpr char kFirstOutputOpen[] = "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>";
constexpr char kLaterOutputOpen[] = "\n<｜tool▁output▁begin｜>";
constexpr char kOutputClose[] = "<｜tool▁output▁end｜>";
constexpr char kOutputsEnd[] = "<｜tool▁outputs▁end｜>";
constexpr char kSystemSeparator[] = "\n\n";

// Collects pieces, merging neighbours of the same kind and dropping empty
// ones, so the result alternates between markup and content.
class PieceWriter {
 public:
  void Markup(std::string_view text) { Add(text, /*from_content=*/false); }
  void Content(std::string_view text) { Add(text, /*from_content=*/true); }
  std::vector<ChatPiece> Take() { return std::move(pieces_); }

 private:
  void Add(std::string_view text, bool from_content) {
    if (text.empty()) return;
    if (!pieces_.empty() && pieces_.back().from_content == from_content) {
      pieces_.back().text.append(text);
    } else {
      pieces_.push_back({std::string(text), from_content});
    }
  }
  std::vector<ChatPiece> pieces_;
};

// `'<｜User｜>' + message['content']` raises in Jinja when content is None;
// report it instead of rendering something the reference never produces.
absl::StatusOr<std::string_view> StringContent(const ChatMessage& message, size_t index) {
  if (!message.content.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat("messages[", index, "]: a '", message.role,
                     "' message needs string content, not null (the DeepSeek-V3 chat template "
                     "concatenates it)"));
  }
  return std::string_view(*message.content);
}

// The template's `namespace(...)`: flags that live across messages.
struct TemplateState {
  bool is_first = false;        // a tool call has been written (never reset)
  bool is_tool = false;         // the last rendered turn was a tool output
  bool is_output_first = true;  // no tool output written yet (never reset)
};

void WriteToolCalls(const ChatMessage& message, TemplateState& ns, PieceWriter& out) {
  for (const ToolCall& call : message.tool_calls) {
    // Only the first call of the whole conversation opens with the assistant
    // and tool-calls markers; every later call, in this message or a later
    // one, is followed by the tool-calls end and EOS. So a message with one
    // call never closes its tool-calls block. This is the template's
    // behaviour, reproduced on purpose.
    const bool first = !ns.is_first;
    out.Markup(first ? kFirstCallOpen : kLaterCallOpen);
    out.Content(call.type);
    out.Markup(kToolSep);
    out.Content(call.name);
    out.Markup(kArgumentsOpen);
    out.Content(call.arguments);
    out.Markup(kCallClose);
    if (first) {
      ns.is_first = true;
    } else {
      out.Markup(kCallsEnd);
    }
  }
}

}  // namespace

absl::StatusOr<std::vector<ChatPiece>> RenderDeepSeekV3Chat(
    const std::vector<ChatMessage>& messages, const std::string& bos_token,
    bool add_generation_prompt) {
  PieceWriter out;
  // First loop: every system message, wherever it is, joined after BOS.
  out.Markup(bos_token);
  bool is_first_system = true;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role != "system") continue;
    XPD_ASSIGN_OR_RETURN(std::string_view content, StringContent(messages[i], i));
    if (!is_first_system) out.Markup(kSystemSeparator);
    out.Content(content);
    is_first_system = false;
  }

  // Second loop. Roles other than user/assistant/tool (system included) write
  // nothing and leave the flags alone, as the template's if-chain does.
  TemplateState ns;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& message = messages[i];
    if (message.role == "user") {
      ns.is_tool = false;
      XPD_ASSIGN_OR_RETURN(std::string_view content, StringContent(message, i));
      out.Markup(kUser);
      out.Content(content);
    } else if (message.role == "assistant" && !message.content.has_value()) {
      // Jinja iterates an undefined `tool_calls` as empty, so a null-content
      // assistant message without calls writes nothing but still clears is_tool.
      ns.is_tool = false;
      WriteToolCalls(message, ns, out);
    } else if (message.role == "assistant") {
      // After tool outputs the answer closes the outputs block instead of
      // opening an assistant turn. Tool calls beside content are ignored.
      out.Markup(ns.is_tool ? kOutputsEnd : kAssistant);
      out.Content(*message.content);
      out.Markup(kEos);
      ns.is_tool = false;
    } else if (message.role == "tool") {
      ns.is_tool = true;
      XPD_ASSIGN_OR_RETURN(std::string_view content, StringContent(message, i));
      // Only the conversation's first output opens the outputs block.
      out.Markup(ns.is_output_first ? kFirstOutputOpen : kLaterOutputOpen);
      out.Content(content);
      out.Markup(kOutputClose);
      ns.is_output_first = false;
    }
  }
  if (ns.is_tool) out.Markup(kOutputsEnd);
  // Ending on tool outputs suppresses the generation prompt.
  if (add_generation_prompt && !ns.is_tool) out.Markup(kAssistant);
  return out.Take();
}

}  // namespace xpd::tokenizer::internal
