// xpd logits --model DIR --tokens 5,17,42 --out FILE.npy [--mtp] [--compute f32|bf16]
// Writes float32 logits [num_tokens, vocab] for every prompt position, or with
// --mtp the MTP module's logits: entry i pairs h_i (after the final norm) with
// token i+1, the last entry with the first greedy token.
#include <algorithm>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "common/base/npy.h"
#include "common/base/status_macros.h"
#include "common/runtime/model_session.h"
#include "services/cli/commands.h"

namespace xpd::cli {
namespace {

using runtime::kModelValueFlags;
using runtime::ModelSession;
using runtime::OpenModelSession;

absl::Status RunLogits(const std::vector<std::string>& args) {
  std::set<std::string> value_flags = kModelValueFlags;
  value_flags.insert({"tokens", "out"});
  XPD_ASSIGN_OR_RETURN(CommandFlags flags, CommandFlags::Parse(args, value_flags, {"mtp"}));
  XPD_ASSIGN_OR_RETURN(std::vector<int64_t> ids, flags.GetIntList("tokens"));
  XPD_ASSIGN_OR_RETURN(std::string out_path, flags.GetString("out"));
  const bool mtp = flags.Has("mtp");
  const int64_t count = static_cast<int64_t>(ids.size());
  XPD_ASSIGN_OR_RETURN(ModelSession session,
                       OpenModelSession(flags, {.load_mtp = mtp, .kv_tokens = count}));
  const model::ModelConfig& config = session.model->config();
  if (mtp && !session.model->has_mtp()) {
    return absl::FailedPreconditionError(
        absl::StrCat(session.checkpoint->dir(), ": no MTP layer (num_nextn_predict_layers = 0)"));
  }
  std::vector<int32_t> tokens;
  for (int64_t id : ids) {
    if (id < 0 || id >= config.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tokens: id ", id, " outside vocabulary [0, ", config.vocab_size, ")"));
    }
    tokens.push_back(static_cast<int32_t>(id));
  }
  std::vector<int32_t> blocks;
  XPD_RETURN_IF_ERROR(session.pool->Reserve(count, &blocks));
  model::ForwardBatch batch;
  batch.sequences.push_back(
      {.tokens = tokens, .start = 0, .block_table = blocks, .logits = model::LogitsRows::kAll});
  model::ForwardOutput output;
  XPD_RETURN_IF_ERROR(session.model->Forward(batch, session.pool->cache(), &output));
  const std::vector<int64_t> shape = {count, config.vocab_size};
  if (!mtp) return base::WriteNpyF32(out_path, output.logits.data(), shape);

  const float* last = &output.logits[(count - 1) * config.vocab_size];
  const int32_t first_generated =
      static_cast<int32_t>(std::max_element(last, last + config.vocab_size) - last);
  std::vector<int32_t> next(tokens.begin() + 1, tokens.end());
  next.push_back(first_generated);
  const model::DeepSeekModel::MtpSequence entries[] = {
      {.hidden = output.hidden.data(), .next_tokens = next, .start = 0, .block_table = blocks}};
  std::vector<float> logits;
  XPD_RETURN_IF_ERROR(session.model->ForwardMtp(entries, session.pool->cache(), &logits));
  return base::WriteNpyF32(out_path, logits.data(), shape);
}

}  // namespace

int RunLogitsCommand(const std::vector<std::string>& args) {
  return ExitStatus("logits", RunLogits(args));
}

}  // namespace xpd::cli
