// xpd bench --model DIR --prompt-tokens 512 --gen-tokens 128 --batch 1 --threads 2
//           --compute bf16 --format json
// Prefill and decode throughput on one model, peak memory, and the memory
// bandwidth measured in the same run with the fraction of the decode
// bandwidth bound reached.
#include <cmath>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/memory_bandwidth.h"
#include "common/base/status_macros.h"
#include "common/model/checkpoint.h"
#include "common/runtime/generator.h"
#include "common/runtime/model_session.h"
#include "nlohmann/json.hpp"
#include "services/cli/commands.h"

namespace xpd::cli {
namespace {

using runtime::kModelValueFlags;
using runtime::ModelSession;
using runtime::OpenModelSession;

// Bytes the loaded engine streams per weight of each kind of matrix: FP8 one
// (plus its scale lines, one f32 per 32 x block_cols weights), BF16 two, F32
// four for f32 compute or two once converted for BF16 compute. The absorbed
// MLA matrices (W_UK^T, W_UV) are derived at load in the compute precision.
struct WeightBytes {
  double attention = 2, absorbed = 2, mlp = 2, router = 2, head = 2;
};

absl::StatusOr<double> BytesPerWeight(const model::Checkpoint& checkpoint, const std::string& name,
                                      kernels::Precision precision) {
  XPD_ASSIGN_OR_RETURN(model::TensorView view, checkpoint.GetAny(name));
  switch (view.dtype) {
    case kernels::DType::kF8E4M3: {
      const auto& q = checkpoint.config().quantization;
      return 1.0 + 4.0 / (q ? q->block_cols : 128);
    }
    case kernels::DType::kBF16:
      return 2.0;
    case kernels::DType::kF32:
      return precision == kernels::Precision::kBF16 ? 2.0 : 4.0;
  }
  return 4.0;
}

absl::StatusOr<WeightBytes> LoadedWeightBytes(const model::Checkpoint& checkpoint,
                                              kernels::Precision precision) {
  const model::ModelConfig& c = checkpoint.config();
  int64_t moe_layer = 0;
  while (moe_layer < c.num_hidden_layers && !c.IsMoeLayer(moe_layer)) ++moe_layer;
  const std::string layer = absl::StrCat("model.layers.", moe_layer, ".");
  WeightBytes b;
  XPD_ASSIGN_OR_RETURN(
      b.attention,
      BytesPerWeight(checkpoint, layer + "self_attn.kv_a_proj_with_mqa.weight", precision));
  const std::string mlp = moe_layer < c.num_hidden_layers ? layer + "mlp.experts.0.down_proj.weight"
                                                          : layer + "mlp.down_proj.weight";
  XPD_ASSIGN_OR_RETURN(b.mlp, BytesPerWeight(checkpoint, mlp, precision));
  if (moe_layer < c.num_hidden_layers) {
    XPD_ASSIGN_OR_RETURN(
        b.router, BytesPerWeight(checkpoint, layer + "mlp.gate.weight", kernels::Precision::kF32));
  }
  XPD_ASSIGN_OR_RETURN(b.head, BytesPerWeight(checkpoint, "lm_head.weight", precision));
  b.absorbed = precision == kernels::Precision::kBF16 ? 2 : 4;
  return b;
}

// Weight bytes one decode step of `batch` sequences streams from memory: every
// non-expert matrix once (absorbed attention form), plus the routed experts the
// batch touches (expected number of distinct experts under uniform routing).
double DecodeWeightBytesPerStep(const model::ModelConfig& c, const WeightBytes& bytes,
                                int64_t batch) {
  const double d = c.hidden_size, heads = c.num_attention_heads, rank = c.kv_lora_rank;
  const double attention = c.q_lora_rank * d + heads * c.qk_head_dim() * c.q_lora_rank +
                           c.latent_dim() * d + d * heads * c.v_head_dim;
  const double absorbed = heads * rank * c.qk_nope_head_dim + heads * c.v_head_dim * rank;
  const double expert = 3.0 * d * c.moe_intermediate_size;
  const double experts_touched =
      c.n_routed_experts *
      (1.0 - std::pow(1.0 - static_cast<double>(c.num_experts_per_tok) / c.n_routed_experts,
                      static_cast<double>(batch)));
  double total = c.vocab_size * d * bytes.head;
  for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
    total += attention * bytes.attention + absorbed * bytes.absorbed;
    if (c.IsMoeLayer(layer)) {
      total += c.n_routed_experts * d * bytes.router +
               (c.n_shared_experts * expert + experts_touched * expert) * bytes.mlp;
    } else {
      total += 3.0 * d * c.intermediate_size * bytes.mlp;
    }
  }
  return total;
}

absl::Status RunBench(const std::vector<std::string>& args) {
  std::set<std::string> value_flags = kModelValueFlags;
  value_flags.insert({"prompt-tokens", "gen-tokens", "batch", "format", "seed"});
  XPD_ASSIGN_OR_RETURN(CommandFlags flags, CommandFlags::Parse(args, value_flags, {}));
  XPD_ASSIGN_OR_RETURN(int64_t prompt_tokens, flags.GetInt("prompt-tokens", 512));
  XPD_ASSIGN_OR_RETURN(int64_t gen_tokens, flags.GetInt("gen-tokens", 128));
  XPD_ASSIGN_OR_RETURN(int64_t batch, flags.GetInt("batch", 1));
  XPD_ASSIGN_OR_RETURN(int64_t seed, flags.GetInt("seed", 1));
  const std::string format = flags.GetString("format", "text");
  if (prompt_tokens < 1 || gen_tokens < 1 || batch < 1 || batch > 4096) {
    return absl::InvalidArgumentError(
        "--prompt-tokens and --gen-tokens must be >= 1, --batch in [1, 4096]");
  }
  if (format != "json" && format != "text") {
    return absl::InvalidArgumentError("--format must be json or text");
  }
  const int64_t per_sequence = (prompt_tokens + gen_tokens + 63) / 64 * 64;
  XPD_ASSIGN_OR_RETURN(ModelSession session,
                       OpenModelSession(flags, {.kv_tokens = batch * per_sequence}));
  const model::ModelConfig& config = session.model->config();

  // Deterministic pseudo-random prompts, different per sequence.
  uint64_t state = static_cast<uint64_t>(seed);
  auto next_token = [&] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<int32_t>((state >> 33) % static_cast<uint64_t>(config.vocab_size));
  };
  std::vector<runtime::GenerateRequest> requests(batch);
  for (runtime::GenerateRequest& r : requests) {
    for (int64_t i = 0; i < prompt_tokens; ++i) r.prompt.push_back(next_token());
    r.max_tokens = gen_tokens;
    r.ignore_eos = true;
    r.sampling.temperature = 0.0f;
  }
  runtime::Generator generator(*session.model, *session.pool);
  // Warm-up: faults in what is still read from the mapping (the embedding,
  // the router, FP8 weights for f32 compute) and warms the caches.
  std::vector<runtime::GenerateRequest> warmup(requests.begin(), requests.begin() + 1);
  warmup[0].max_tokens = 2;
  XPD_RETURN_IF_ERROR(generator.Generate(warmup).status());
  runtime::GenerateTimings timings;
  XPD_RETURN_IF_ERROR(generator.Generate(requests, &timings).status());

  // Peak memory of the engine itself, before the bandwidth probe's buffers.
  const int64_t peak_rss = base::PeakRssBytes();
  const int threads = session.backend->num_threads();
  const double bandwidth = base::MeasureTriadBandwidth(threads);
  XPD_ASSIGN_OR_RETURN(const WeightBytes weight_bytes,
                       LoadedWeightBytes(*session.checkpoint, session.model->precision()));
  const double step_bytes = DecodeWeightBytesPerStep(config, weight_bytes, batch);
  const double decode_tps = timings.decode_tokens / timings.decode_seconds;
  const double bound_tps = bandwidth / step_bytes * batch;
  nlohmann::json out = {
      {"model", session.checkpoint->dir()},
      {"backend", session.backend->name()},
      {"compute", session.model->precision() == kernels::Precision::kBF16 ? "bf16" : "f32"},
      {"threads", threads},
      {"batch", batch},
      {"prompt_tokens", prompt_tokens},
      {"gen_tokens", gen_tokens},
      {"prefill_tokens_per_s", timings.prefill_tokens / timings.prefill_seconds},
      {"decode_tokens_per_s", decode_tps},
      {"prefill_seconds", timings.prefill_seconds},
      {"decode_seconds", timings.decode_seconds},
      {"peak_rss_bytes", peak_rss},
      {"bandwidth_bytes_per_s", bandwidth},
      {"decode_weight_bytes_per_step", step_bytes},
      {"decode_bandwidth_bound_tokens_per_s", bound_tps},
      {"decode_fraction_of_bound", decode_tps / bound_tps},
  };
  if (format == "json") {
    std::cout << out.dump() << "\n";
  } else {
    std::cout << absl::StrFormat(
        "batch %d, %d prompt + %d generated tokens, %s, %s\n"
        "  prefill %10.1f tokens/s\n  decode  %10.1f tokens/s (%.0f%% of the %.1f tokens/s "
        "bandwidth bound at %.1f GB/s)\n  peak RSS %.2f GiB\n",
        batch, prompt_tokens, gen_tokens, out["compute"].get<std::string>(),
        session.backend->name(), out["prefill_tokens_per_s"].get<double>(), decode_tps,
        100.0 * decode_tps / bound_tps, bound_tps, bandwidth / 1e9, peak_rss / double(1 << 30));
  }
  return absl::OkStatus();
}

}  // namespace

int RunBenchCommand(const std::vector<std::string>& args) {
  return ExitStatus("bench", RunBench(args));
}

}  // namespace xpd::cli
