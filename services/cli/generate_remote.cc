// `xpd generate --router HOST:P`: a thin layer over the C++ client SDK.
// --format json prints {"tokens":[...]} exactly like the local engine;
// otherwise --prompt / --chat stream the text to the terminal as it comes.
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/client/generation_client.h"
#include "nlohmann/json.hpp"
#include "services/cli/commands.h"

namespace xpd::cli {
namespace {

absl::Status FillChat(const std::string& path, xpd::v1::Chat* chat) {
  std::ifstream file(path);
  if (!file) return absl::NotFoundError(absl::StrCat("--chat: cannot read ", path));
  std::stringstream text;
  text << file.rdbuf();
  nlohmann::json json = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, ": not JSON"));
  // Either {"messages": [...], "add_generation_prompt": bool} or a bare list.
  const nlohmann::json messages = json.is_array() ? json : json.value("messages", nlohmann::json());
  if (!messages.is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": expected a list of messages"));
  }
  chat->set_add_generation_prompt(json.is_object() ? json.value("add_generation_prompt", true)
                                                   : true);
  for (size_t i = 0; i < messages.size(); ++i) {
    const nlohmann::json& m = messages[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": messages[", i, "].role must be a string"));
    }
    xpd::v1::ChatMessage* message = chat->add_messages();
    message->set_role(m["role"].get<std::string>());
    if (m.contains("content") && m["content"].is_string()) {
      message->set_content(m["content"].get<std::string>());
    }
    for (const nlohmann::json& call : m.value("tool_calls", nlohmann::json::array())) {
      xpd::v1::ToolCall* tool = message->add_tool_calls();
      tool->set_type(call.value("type", "function"));
      const nlohmann::json function = call.value("function", nlohmann::json::object());
      tool->set_name(function.value("name", ""));
      tool->set_arguments(function.value("arguments", ""));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RunRemoteGenerate(const CommandFlags& flags) {
  XPD_ASSIGN_OR_RETURN(std::string router, flags.GetString("router"));
  xpd::v1::GenerateRequest request;
  const int prompts = flags.Has("tokens") + flags.Has("prompt") + flags.Has("chat");
  if (prompts != 1) {
    return absl::InvalidArgumentError("give exactly one of --tokens, --prompt, --chat");
  }
  if (flags.Has("tokens")) {
    XPD_ASSIGN_OR_RETURN(std::vector<int64_t> ids, flags.GetIntList("tokens"));
    for (int64_t id : ids) request.mutable_tokens()->add_ids(static_cast<int32_t>(id));
  } else if (flags.Has("prompt")) {
    request.set_text(flags.GetString("prompt", ""));
  } else {
    XPD_RETURN_IF_ERROR(FillChat(flags.GetString("chat", ""), request.mutable_chat()));
  }
  xpd::v1::SamplingParams* sampling = request.mutable_sampling();
  XPD_ASSIGN_OR_RETURN(int64_t max_tokens, flags.GetInt("max-tokens", 16));
  XPD_ASSIGN_OR_RETURN(double temperature, flags.GetDouble("temperature", 1.0));
  XPD_ASSIGN_OR_RETURN(int64_t top_k, flags.GetInt("top-k", 0));
  XPD_ASSIGN_OR_RETURN(double top_p, flags.GetDouble("top-p", 1.0));
  XPD_ASSIGN_OR_RETURN(int64_t seed, flags.GetInt("seed", 0));
  XPD_ASSIGN_OR_RETURN(int64_t timeout, flags.GetInt("timeout", 600));
  sampling->set_max_tokens(static_cast<int32_t>(max_tokens));
  sampling->set_temperature(static_cast<float>(temperature));
  sampling->set_top_k(static_cast<int32_t>(top_k));
  sampling->set_top_p(static_cast<float>(top_p));
  sampling->set_seed(static_cast<uint64_t>(seed));
  sampling->set_ignore_eos(flags.Has("ignore-eos"));
  sampling->set_logprobs(flags.Has("logprobs"));
  if (flags.Has("stop")) sampling->add_stop(flags.GetString("stop", ""));

  XPD_ASSIGN_OR_RETURN(auto client, client::GenerationClient::Create(router));
  const client::CallOptions call{.timeout = absl::Seconds(timeout)};
  const std::string format = flags.GetString("format", flags.Has("tokens") ? "json" : "text");
  if (format == "json") {
    XPD_ASSIGN_OR_RETURN(client::GenerateResult result, client->Generate(request, call));
    nlohmann::json out = {{"tokens", result.token_ids}};
    if (flags.Has("logprobs")) {
      std::vector<float> logprobs;
      for (const auto& lp : result.logprobs) logprobs.push_back(lp.logprob());
      out["logprobs"] = logprobs;
    }
    std::cout << out.dump() << "\n";
    return absl::OkStatus();
  }
  if (format != "text") return absl::InvalidArgumentError("--format must be json or text");
  XPD_RETURN_IF_ERROR(client->GenerateStream(
      request,
      [](const xpd::v1::GenerateResponse& response) {
        std::cout << response.text() << std::flush;
        return true;
      },
      call));
  std::cout << "\n";
  return absl::OkStatus();
}

}  // namespace xpd::cli
