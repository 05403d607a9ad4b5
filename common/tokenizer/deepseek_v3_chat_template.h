// The DeepSeek-V3 chat template (tokenizer_config.json of deepseek-ai/DeepSeek-V3),
// re-implemented statement by statement because no Jinja engine is available.
// Private to xpd_chat_template: callers use TokenizerConfig::RenderChat.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tokenizer/chat_template.h"

namespace xpd::tokenizer::internal {

// SHA-256 of the template text exactly as published (2145 bytes).
inline constexpr char kDeepSeekV3ChatTemplateSha256[] =
    "3b8267e54b67df6500f231ffa969955cc9d26b3444a291ced4eb96ca7d3ca1ea";

// Renders `messages` as the Jinja template does with `bos_token` bound to the
// config's BOS text. InvalidArgument where the template itself would raise
// (a null content concatenated to a string).
absl::StatusOr<std::vector<ChatPiece>> RenderDeepSeekV3Chat(
    const std::vector<ChatMessage>& messages, const std::string& bos_token,
    bool add_generation_prompt);

}  // namespace xpd::tokenizer::internal
