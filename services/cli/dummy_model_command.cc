// `xpd dummy-model`: writes a DeepSeek-V3 checkpoint with random weights
// (preset default or small), or sizes the real 671B model (deepseek-v3).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/model/dummy_checkpoint.h"
#include "common/model/tensor_inventory.h"
#include "common/tokenizer/tokenizer.h"
#include "services/cli/command_flags.h"
#include "services/cli/commands.h"

namespace xpd::cli {
namespace {

constexpr char kUsage[] =
    "usage: xpd dummy-model [--preset default|small|deepseek-v3] --out DIR\n"
    "                       [--dtype bf16|fp8] [--seed N] [--shards N] [--ep-ranks N]\n"
    "                       [--threads N] [--tokenizer DIR]\n"
    "Writes a DeepSeek-V3 checkpoint with DUMMY random weights (for tests and benchmarks).\n"
    "  default      real vocabulary (129280), 4 tiny layers + 1 MTP layer (~0.3 GB)\n"
    "  small        1.18B parameters, 173M active per token (2.4 GB in bf16)\n"
    "  deepseek-v3  the real 671B config: prints its size and per-rank memory plan\n"
    "               for --ep-ranks expert-parallel ranks (default 8); writes nothing\n"
    "The checkpoint gets tokenizer.json and tokenizer_config.json from --tokenizer DIR\n"
    "(default: the DeepSeek-V3 tokenizer built in) when the tokenizer's ids fit the\n"
    "preset's vocabulary: default yes, small (8192) no.\n";

int UsageError(const std::string& message) {
  std::cerr << "xpd dummy-model: " << message << "\n" << kUsage;
  return 2;
}

std::string GiB(int64_t bytes) {
  return absl::StrFormat("%.2f GiB (%d bytes)", static_cast<double>(bytes) / (1ll << 30), bytes);
}

void PrintPlan(const model::ModelConfig& config, bool fp8, int64_t ep_ranks) {
  const model::MemoryPlan main = model::PlanMemory(config, fp8, ep_ranks, false);
  const model::MemoryPlan with_mtp = model::PlanMemory(config, fp8, ep_ranks, true);
  std::cout << absl::StrFormat(
      "memory plan, %d expert-parallel ranks (%s weights; %d of %d routed experts per rank "
      "per MoE layer):\n",
      main.ep_ranks, fp8 ? "FP8 e4m3 + block scales" : "BF16", main.experts_per_rank,
      config.n_routed_experts);
  std::cout << "  replicated per rank (attention, dense MLP, shared experts, routers, norms, "
               "embedding, head): "
            << GiB(main.replicated_bytes) << "\n";
  std::cout << "  routed experts per rank: " << GiB(main.routed_expert_bytes_per_rank) << "\n";
  std::cout << "  weights per rank: " << GiB(main.weight_bytes_per_rank()) << "\n";
  std::cout << "  held by a CPU rank once loaded (--compute bf16: packed tiles, FP8 scales per "
               "32-row tile, absorbed MLA matrices in BF16): "
            << GiB(main.cpu_weight_bytes_per_rank()) << "\n";
  if (config.num_nextn_predict_layers > 0) {
    std::cout << "  MTP module adds per rank: "
              << GiB(with_mtp.weight_bytes_per_rank() - main.weight_bytes_per_rank()) << "\n";
  }
  std::cout << absl::StrFormat(
      "  latent KV cache: %d bytes per token (%d layers x %d values x 2 B BF16)%s; the CPU "
      "engine's cache holds f32, twice that\n",
      main.kv_bytes_per_token, config.num_hidden_layers, config.latent_dim(),
      config.num_nextn_predict_layers > 0
          ? absl::StrFormat(", %d with the MTP layer", with_mtp.kv_bytes_per_token)
          : "");
}

void PrintCounts(const std::string& preset, const model::ModelConfig& config) {
  const model::ParameterCounts counts = model::CountParameters(config);
  std::cout << absl::StrFormat(
      "%s: %d parameters (main model) + %d MTP = %d; %d active per token "
      "(+ %d embedding)\n",
      preset, counts.total, counts.mtp, counts.total + counts.mtp, counts.active_per_token,
      counts.embedding);
}

// Progress on stderr: an updating line on a terminal, every 10% otherwise.
class Progress {
 public:
  explicit Progress(std::string dir) : dir_(std::move(dir)), tty_(::isatty(2) != 0) {}
  void operator()(int64_t done, int64_t total) {
    const int percent = total > 0 ? static_cast<int>(100 * done / total) : 100;
    if (percent == last_ || (!tty_ && percent / 10 == last_ / 10 && percent != 100)) return;
    last_ = percent;
    std::cerr << absl::StrFormat("%swriting %s: %3d%% (%.2f / %.2f GB)%s", tty_ ? "\r" : "", dir_,
                                 percent, done / 1e9, total / 1e9, tty_ ? "" : "\n");
    if (tty_ && percent == 100) std::cerr << "\n";
  }

 private:
  std::string dir_;
  bool tty_;
  int last_ = -1;
};

// Sets options->tokenizer_dir when the tokenizer (--tokenizer DIR, else the
// built-in DeepSeek-V3 one) has ids that all fit the preset's vocabulary;
// otherwise records why not. Returns an exit status, 0 to go on.
int ChooseTokenizer(const CommandFlags& flags, const model::ModelConfig& config,
                    model::DummyWriteOptions* options) {
  const bool given = flags.Has("tokenizer");
  const std::string dir = flags.GetString("tokenizer", XPD_DEFAULT_TOKENIZER_DIR);
  if (given && !std::filesystem::is_directory(dir)) {
    return UsageError(
        "--tokenizer must be a directory holding tokenizer.json and "
        "tokenizer_config.json: " +
        dir);
  }
  absl::StatusOr<std::unique_ptr<tokenizer::Tokenizer>> tok = tokenizer::Tokenizer::Load(dir);
  if (!tok.ok()) {
    if (given) {
      std::cerr << "xpd dummy-model: " << tok.status().message() << "\n";
      return 1;
    }
    std::cerr << "note: no tokenizer copied (built-in tokenizer unavailable: "
              << tok.status().message() << ")\n";
    options->no_tokenizer_reason = "the built-in tokenizer was not found when it was written";
    return 0;
  }
  const int32_t id_space = (*tok)->id_space();
  if (id_space > config.vocab_size) {
    const std::string why =
        absl::StrFormat("the tokenizer's %d token ids do not fit this preset's vocabulary of %d",
                        id_space, config.vocab_size);
    if (given) return UsageError("--tokenizer: " + why);
    std::cerr << "note: no tokenizer copied: " << why << "\n";
    options->no_tokenizer_reason = why;
    return 0;
  }
  options->tokenizer_dir = dir;
  return 0;
}

}  // namespace

int RunDummyModelCommand(const std::vector<std::string>& args) {
  absl::StatusOr<CommandFlags> flags = CommandFlags::Parse(
      args, {"preset", "out", "dtype", "seed", "shards", "ep-ranks", "threads", "tokenizer"},
      {"help"});
  if (!flags.ok()) return UsageError(std::string(flags.status().message()));
  if (flags->Has("help")) {
    std::cout << kUsage;
    return 0;
  }
  const std::string preset = flags->GetString("preset", "default");
  absl::StatusOr<model::ModelConfig> config = model::DummyPresetConfig(preset);
  if (!config.ok()) return UsageError(std::string(config.status().message()));
  const bool sizing_only = preset == "deepseek-v3";

  const std::string dtype = flags->GetString("dtype", sizing_only ? "fp8" : "bf16");
  if (dtype != "bf16" && dtype != "fp8") {
    return UsageError("--dtype must be bf16 or fp8, not '" + dtype + "'");
  }
  absl::StatusOr<int64_t> seed = flags->GetInt("seed", 0);
  absl::StatusOr<int64_t> shards = flags->GetInt("shards", 1);
  absl::StatusOr<int64_t> ep_ranks = flags->GetInt("ep-ranks", 8);
  absl::StatusOr<int64_t> threads = flags->GetInt("threads", 0);
  for (const auto* value : {&seed, &shards, &ep_ranks, &threads}) {
    if (!value->ok()) return UsageError(std::string(value->status().message()));
  }
  if (*seed < 0) return UsageError("--seed must not be negative");
  if (*shards < 1 || *shards > 99999) return UsageError("--shards must be in 1..99999");
  if (*ep_ranks < 1) return UsageError("--ep-ranks must be positive");
  if (*threads < 0) return UsageError("--threads must not be negative");
  const bool fp8 = dtype == "fp8";

  if (sizing_only) {
    if (flags->Has("out")) std::cerr << "note: deepseek-v3 is sized only; --out is ignored\n";
    PrintCounts(preset, *config);
    PrintPlan(*config, fp8, *ep_ranks);
    return 0;
  }
  absl::StatusOr<std::string> out = flags->GetString("out");
  if (!out.ok()) return UsageError("--out DIR is required for preset " + preset);

  model::DummyWriteOptions options;
  options.weights_dtype = fp8 ? kernels::DType::kF8E4M3 : kernels::DType::kBF16;
  options.seed = static_cast<uint64_t>(*seed);
  options.num_shards = static_cast<int>(*shards);
  options.num_threads = static_cast<int>(*threads);
  options.preset = preset;
  if (const int rc = ChooseTokenizer(*flags, *config, &options); rc != 0) return rc;
  Progress progress(*out);
  options.progress = [&progress](int64_t done, int64_t total) { progress(done, total); };
  const auto start = std::chrono::steady_clock::now();
  const absl::Status status = model::WriteDummyCheckpoint(*config, *out, options);
  if (!status.ok()) {
    std::cerr << "xpd dummy-model: " << status.message() << "\n";
    return 1;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const model::ParameterCounts counts = model::CountParameters(*config);
  int64_t bytes = 0;
  for (const model::TensorSpec& t : model::CheckpointInventory(*config, fp8)) {
    bytes += t.size_bytes();
  }
  std::cout << absl::StrFormat(
      "wrote %s: preset %s, %s, seed %d, %d file(s), %d parameters (+%d MTP, %d active per "
      "token), %.2f GB in %.1f s\n",
      *out, preset, fp8 ? "fp8" : "bf16", *seed, *shards, counts.total, counts.mtp,
      counts.active_per_token, bytes / 1e9, seconds);
  if (flags->Has("ep-ranks")) PrintPlan(*config, fp8, *ep_ranks);
  return 0;
}

}  // namespace xpd::cli
