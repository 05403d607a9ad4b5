// Message parsing, tokenizer_config.json loading, template recognition and
// encoding. Rendering of each known template lives in its own file.
#include "common/tokenizer/chat_template.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/base/sha256.h"
#include "common/base/status_macros.h"
#include "common/tokenizer/deepseek_v3_chat_template.h"

namespace xpd::tokenizer {
namespace {

using json = nlohmann::json;

// ---------------------------------------------------------------- messages

std::string TypeName(const json& value) { return value.type_name(); }

absl::Status FieldError(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

// `content`: a string, null/absent (nullopt), or OpenAI content parts of
// which only text parts are meaningful to a text-only template.
absl::StatusOr<std::optional<std::string>> ParseContent(const json& message,
                                                        const std::string& field) {
  auto it = message.find("content");
  if (it == message.end() || it->is_null()) return std::optional<std::string>();
  if (it->is_string()) return std::optional<std::string>(it->get<std::string>());
  if (!it->is_array()) {
    return FieldError(field, absl::StrCat("expected a string, null or an array of text parts, got ",
                                          TypeName(*it)));
  }
  std::string text;
  for (size_t k = 0; k < it->size(); ++k) {
    const json& part = (*it)[k];
    const std::string part_field = absl::StrCat(field, "[", k, "]");
    if (!part.is_object()) {
      return FieldError(part_field, absl::StrCat("expected an object, got ", TypeName(part)));
    }
    auto type = part.find("type");
    if (type == part.end() || !type->is_string()) {
      return FieldError(part_field + ".type", "missing or not a string");
    }
    if (type->get<std::string>() != "text") {
      return FieldError(part_field + ".type",
                        absl::StrCat("'", type->get<std::string>(),
                                     "' parts are not supported; only 'text' parts are"));
    }
    auto part_text = part.find("text");
    if (part_text == part.end() || !part_text->is_string()) {
      return FieldError(part_field + ".text", "missing or not a string");
    }
    // Parts are joined as is, with no separator.
    text += part_text->get_ref<const std::string&>();
  }
  return std::optional<std::string>(std::move(text));
}

absl::StatusOr<std::string> RequiredString(const json& object, const char* key,
                                           const std::string& field) {
  auto it = object.find(key);
  if (it == object.end()) return FieldError(field, "missing");
  if (!it->is_string()) {
    return FieldError(field, absl::StrCat("expected a string, got ", TypeName(*it)));
  }
  return it->get<std::string>();
}

absl::StatusOr<ToolCall> ParseToolCall(const json& value, const std::string& field) {
  if (!value.is_object()) {
    return FieldError(field, absl::StrCat("expected an object, got ", TypeName(value)));
  }
  ToolCall call;
  // OpenAI always sends "function"; absent means that too.
  if (auto type = value.find("type"); type != value.end()) {
    if (!type->is_string()) return FieldError(field + ".type", "expected a string");
    call.type = type->get<std::string>();
  }
  auto function = value.find("function");
  if (function == value.end() || !function->is_object()) {
    return FieldError(field + ".function", "missing or not an object");
  }
  XPD_ASSIGN_OR_RETURN(call.name, RequiredString(*function, "name", field + ".function.name"));
  // The template concatenates arguments as text, so they must arrive as the
  // JSON-encoded string OpenAI sends; re-serialising an object would invent a
  // spelling (spacing, key order) the caller never wrote.
  const std::string arguments_field = field + ".function.arguments";
  auto arguments = function->find("arguments");
  if (arguments == function->end()) return FieldError(arguments_field, "missing");
  if (!arguments->is_string()) {
    return FieldError(arguments_field, absl::StrCat("expected a string holding JSON text, got ",
                                                    TypeName(*arguments)));
  }
  call.arguments = arguments->get<std::string>();
  return call;
}

// ------------------------------------------------------------ config file

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read failed"));
  return text.str();
}

// bos_token / eos_token: a plain string or a serialised AddedToken object.
absl::StatusOr<std::string> TokenText(const json& config, const char* key,
                                      const std::string& file) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::string();
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto content = it->find("content");
    if (content != it->end() && content->is_string()) return content->get<std::string>();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      file, ": ", key, ": expected a string or an AddedToken object with a string \"content\""));
}

// chat_template: a string, or a list of {"name", "template"} from which the
// one named "default" is used, as transformers does when no name is given.
absl::StatusOr<std::string> TemplateText(const json& config, const std::string& file) {
  auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) return std::string();
  if (it->is_string()) return it->get<std::string>();
  if (!it->is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": chat_template: expected a string or a list of {name, template}, got ",
                     TypeName(*it)));
  }
  std::vector<std::string> names;
  for (size_t i = 0; i < it->size(); ++i) {
    const json& entry = (*it)[i];
    auto name = entry.is_object() ? entry.find("name") : entry.end();
    auto text = entry.is_object() ? entry.find("template") : entry.end();
    if (!entry.is_object() || name == entry.end() || !name->is_string() || text == entry.end() ||
        !text->is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(
          file, ": chat_template[", i, "]: expected {\"name\": string, \"template\": string}"));
    }
    if (name->get<std::string>() == "default") return text->get<std::string>();
    names.push_back(name->get<std::string>());
  }
  return absl::InvalidArgumentError(
      absl::StrCat(file, ": chat_template: no template named 'default' among the named templates [",
                   absl::StrJoin(names, ", "), "]"));
}

// ------------------------------------------------------- known templates

using RenderFn = absl::StatusOr<std::vector<ChatPiece>> (*)(const std::vector<ChatMessage>&,
                                                            const std::string&, bool);
struct KnownTemplate {
  const char* name;
  const char* sha256;
  RenderFn render;
};
constexpr KnownTemplate kKnownTemplates[] = {
    {"deepseek-v3", internal::kDeepSeekV3ChatTemplateSha256, &internal::RenderDeepSeekV3Chat},
};

std::string_view TrimWhitespace(std::string_view text) {
  constexpr std::string_view kSpace = " \t\n\r\f\v";
  const size_t begin = text.find_first_not_of(kSpace);
  if (begin == std::string_view::npos) return {};
  return text.substr(begin, text.find_last_not_of(kSpace) - begin + 1);
}

// Exact text first; surrounding white space is tolerated because some tools
// add a trailing newline when they copy a template into a file.
const KnownTemplate* Recognize(const std::string& text) {
  if (text.empty()) return nullptr;
  const std::string exact = base::Sha256Hex(text);
  const std::string trimmed = base::Sha256Hex(TrimWhitespace(text));
  for (const KnownTemplate& known : kKnownTemplates) {
    if (exact == known.sha256 || trimmed == known.sha256) return &known;
  }
  return nullptr;
}

// --------------------------------------------------------------- encoding

// kAsPlainText: the reference splits its input at every added token before
// pre-tokenization, so the text between two added tokens is one span for the
// regexes and BPE. Here only the template's own added tokens split: each run
// of text between them (content plus any plain markup such as "\n```json\n")
// is encoded as one span with added-token text treated as plain text. With no
// added-token text in the content the spans, and hence the ids, are the
// reference's.
class PlainContentEncoder {
 public:
  explicit PlainContentEncoder(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}

  absl::Status Add(const ChatPiece& piece) {
    if (piece.from_content) {
      run_ += piece.text;
      return absl::OkStatus();
    }
    // PreTokenize keeps each added token whole; the other pieces of markup
    // rejoin the current run so the run is pre-tokenized as the reference does.
    XPD_ASSIGN_OR_RETURN(std::vector<std::string> parts, tokenizer_.PreTokenize(piece.text));
    for (std::string& part : parts) {
      XPD_ASSIGN_OR_RETURN(const std::vector<int32_t>* token_ids, AddedTokenIds(part));
      if (token_ids == nullptr) {
        run_ += part;
        continue;
      }
      XPD_RETURN_IF_ERROR(FlushRun());
      ids_.insert(ids_.end(), token_ids->begin(), token_ids->end());
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<int32_t>> Finish() {
    XPD_RETURN_IF_ERROR(FlushRun());
    return std::move(ids_);
  }

 private:
  absl::Status FlushRun() {
    if (run_.empty()) return absl::OkStatus();
    XPD_ASSIGN_OR_RETURN(
        std::vector<int32_t> ids,
        tokenizer_.Encode(run_, {.special_tokens = SpecialTokenText::kAsPlainText}));
    ids_.insert(ids_.end(), ids.begin(), ids.end());
    run_.clear();
    return absl::OkStatus();
  }

  // The ids of `part` if it is added-token text (it encodes differently when
  // added tokens are recognised), else nullptr. Cached: markup repeats.
  absl::StatusOr<const std::vector<int32_t>*> AddedTokenIds(const std::string& part) {
    auto it = added_.find(part);
    if (it == added_.end()) {
      XPD_ASSIGN_OR_RETURN(std::vector<int32_t> recognized, tokenizer_.Encode(part));
      XPD_ASSIGN_OR_RETURN(
          std::vector<int32_t> plain,
          tokenizer_.Encode(part, {.special_tokens = SpecialTokenText::kAsPlainText}));
      std::optional<std::vector<int32_t>> entry;
      if (recognized != plain) entry = std::move(recognized);
      it = added_.emplace(part, std::move(entry)).first;
    }
    return it->second.has_value() ? &*it->second : nullptr;
  }

  const Tokenizer& tokenizer_;
  std::string run_;
  std::vector<int32_t> ids_;
  std::unordered_map<std::string, std::optional<std::vector<int32_t>>> added_;
};

}  // namespace

absl::StatusOr<std::vector<ChatMessage>> ParseChatMessages(const nlohmann::json& messages) {
  if (!messages.is_array()) {
    return FieldError("messages", absl::StrCat("expected an array, got ", TypeName(messages)));
  }
  std::vector<ChatMessage> parsed;
  parsed.reserve(messages.size());
  for (size_t i = 0; i < messages.size(); ++i) {
    const json& value = messages[i];
    const std::string field = absl::StrCat("messages[", i, "]");
    if (!value.is_object()) {
      return FieldError(field, absl::StrCat("expected an object, got ", TypeName(value)));
    }
    ChatMessage message;
    XPD_ASSIGN_OR_RETURN(message.role, RequiredString(value, "role", field + ".role"));
    XPD_ASSIGN_OR_RETURN(message.content, ParseContent(value, field + ".content"));
    if (auto calls = value.find("tool_calls"); calls != value.end() && !calls->is_null()) {
      if (!calls->is_array()) {
        return FieldError(field + ".tool_calls",
                          absl::StrCat("expected an array, got ", TypeName(*calls)));
      }
      for (size_t j = 0; j < calls->size(); ++j) {
        XPD_ASSIGN_OR_RETURN(
            ToolCall call, ParseToolCall((*calls)[j], absl::StrCat(field, ".tool_calls[", j, "]")));
        message.tool_calls.push_back(std::move(call));
      }
    }
    parsed.push_back(std::move(message));
  }
  return parsed;
}

absl::StatusOr<TokenizerConfig> TokenizerConfig::Load(const std::string& path) {
  std::string file = path;
  if (std::error_code error; std::filesystem::is_directory(path, error)) {
    file = (std::filesystem::path(path) / "tokenizer_config.json").string();
  }
  XPD_ASSIGN_OR_RETURN(std::string text, ReadFile(file));
  json config;
  try {
    config = json::parse(text);
  } catch (const json::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": not valid JSON: ", e.what()));
  }
  if (!config.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": expected a JSON object, got ", TypeName(config)));
  }
  TokenizerConfig result;
  XPD_ASSIGN_OR_RETURN(result.bos_token_, TokenText(config, "bos_token", file));
  XPD_ASSIGN_OR_RETURN(result.eos_token_, TokenText(config, "eos_token", file));
  if (auto it = config.find("add_bos_token"); it != config.end() && !it->is_null()) {
    if (!it->is_boolean()) {
      return absl::InvalidArgumentError(
          absl::StrCat(file, ": add_bos_token: expected a boolean, got ", TypeName(*it)));
    }
    result.add_bos_token_ = it->get<bool>();
  }
  XPD_ASSIGN_OR_RETURN(result.chat_template_, TemplateText(config, file));
  if (const KnownTemplate* known = Recognize(result.chat_template_)) {
    result.template_name_ = known->name;
  }
  return result;
}

absl::StatusOr<std::vector<ChatPiece>> TokenizerConfig::RenderChat(
    const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  if (chat_template_.empty()) {
    return absl::FailedPreconditionError(
        "the tokenizer config has no chat_template, so conversations cannot be rendered");
  }
  for (const KnownTemplate& known : kKnownTemplates) {
    if (template_name_ == known.name) {
      return known.render(messages, bos_token_, add_generation_prompt);
    }
  }
  std::vector<std::string> supported;
  for (const KnownTemplate& known : kKnownTemplates) {
    supported.push_back(absl::StrCat(known.name, " (sha256 ", known.sha256, ")"));
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "unknown chat template (sha256 ", base::Sha256Hex(chat_template_), ", ",
      chat_template_.size(),
      " bytes): there is no Jinja engine here, only built-in renderers for known templates: ",
      absl::StrJoin(supported, ", ")));
}

absl::StatusOr<RenderedChat> ApplyChatTemplate(const Tokenizer& tokenizer,
                                               const TokenizerConfig& config,
                                               const std::vector<ChatMessage>& messages,
                                               const ChatRenderOptions& options) {
  XPD_ASSIGN_OR_RETURN(std::vector<ChatPiece> pieces,
                       config.RenderChat(messages, options.add_generation_prompt));
  RenderedChat rendered;
  for (const ChatPiece& piece : pieces) rendered.text += piece.text;
  if (options.content_special_tokens == SpecialTokenText::kRecognize) {
    // The reference: the whole text encoded, added-token text recognised anywhere.
    XPD_ASSIGN_OR_RETURN(rendered.ids, tokenizer.Encode(rendered.text));
    return rendered;
  }
  PlainContentEncoder encoder(tokenizer);
  for (const ChatPiece& piece : pieces) XPD_RETURN_IF_ERROR(encoder.Add(piece));
  XPD_ASSIGN_OR_RETURN(rendered.ids, encoder.Finish());
  return rendered;
}

}  // namespace xpd::tokenizer
