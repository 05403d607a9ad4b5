// xpd generate --model DIR --tokens 5,17,42 --max-tokens 8 --temperature 0 [--ignore-eos]
//   runs the engine in this process and prints {"tokens":[...]}.
// xpd generate --router HOST:P (--tokens IDS | --prompt TEXT | --chat FILE.json) ... [--format
// json]
//   asks a cluster (generate_remote.cc).
#include <iostream>

#include "common/base/status_macros.h"
#include "common/runtime/generator.h"
#include "common/runtime/model_session.h"
#include "nlohmann/json.hpp"
#include "services/cli/commands.h"

namespace xpd::cli {
namespace {

using runtime::kModelValueFlags;
using runtime::ModelSession;
using runtime::OpenModelSession;

absl::Status RunGenerate(const std::vector<std::string>& args) {
  std::set<std::string> value_flags = kModelValueFlags;
  value_flags.insert({"tokens", "max-tokens", "temperature", "top-k", "top-p", "seed", "router",
                      "prompt", "chat", "format", "stop", "timeout"});
  XPD_ASSIGN_OR_RETURN(CommandFlags flags,
                       CommandFlags::Parse(args, value_flags, {"ignore-eos", "logprobs"}));
  if (flags.Has("router")) return RunRemoteGenerate(flags);
  XPD_ASSIGN_OR_RETURN(std::vector<int64_t> ids, flags.GetIntList("tokens"));
  runtime::GenerateRequest request;
  for (int64_t id : ids) request.prompt.push_back(static_cast<int32_t>(id));
  XPD_ASSIGN_OR_RETURN(request.max_tokens, flags.GetInt("max-tokens", 16));
  XPD_ASSIGN_OR_RETURN(double temperature, flags.GetDouble("temperature", 1.0));
  XPD_ASSIGN_OR_RETURN(int64_t top_k, flags.GetInt("top-k", 0));
  XPD_ASSIGN_OR_RETURN(double top_p, flags.GetDouble("top-p", 1.0));
  XPD_ASSIGN_OR_RETURN(int64_t seed, flags.GetInt("seed", 0));
  request.sampling = {.temperature = static_cast<float>(temperature),
                      .top_k = static_cast<int32_t>(top_k),
                      .top_p = static_cast<float>(top_p),
                      .seed = static_cast<uint64_t>(seed)};
  request.ignore_eos = flags.Has("ignore-eos");
  XPD_RETURN_IF_ERROR(runtime::ValidateSamplingParams(request.sampling));
  if (request.max_tokens < 1) return absl::InvalidArgumentError("--max-tokens must be >= 1");
  const int64_t length = static_cast<int64_t>(request.prompt.size()) + request.max_tokens;
  XPD_ASSIGN_OR_RETURN(ModelSession session, OpenModelSession(flags, {.kv_tokens = length}));
  runtime::Generator generator(*session.model, *session.pool);
  XPD_ASSIGN_OR_RETURN(std::vector<runtime::GenerateResult> results, generator.Generate({request}));
  nlohmann::json out = {{"tokens", results[0].tokens}};
  if (flags.Has("logprobs")) out["logprobs"] = results[0].logprobs;
  std::cout << out.dump() << "\n";
  return absl::OkStatus();
}

}  // namespace

int RunGenerateCommand(const std::vector<std::string>& args) {
  return ExitStatus("generate", RunGenerate(args));
}

}  // namespace xpd::cli
