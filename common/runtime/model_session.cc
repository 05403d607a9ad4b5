#include "common/runtime/model_session.h"

#include <chrono>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/status_macros.h"

namespace xpd::runtime {

absl::StatusOr<ModelSession> OpenModelSession(const base::CommandFlags& flags,
                                              const ModelSessionOptions& options) {
  XPD_ASSIGN_OR_RETURN(std::string dir, flags.GetString("model"));
  const std::string compute = flags.GetString("compute", "f32");
  model::LoadOptions load;
  if (compute == "f32") {
    load.precision = kernels::Precision::kF32;
  } else if (compute == "bf16") {
    load.precision = kernels::Precision::kBF16;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--compute: '", compute, "' is not one of f32, bf16"));
  }
  XPD_ASSIGN_OR_RETURN(int64_t threads, flags.GetInt("threads", 0));
  if (threads < 0 || threads > 1024) {
    return absl::InvalidArgumentError("--threads must be in [0, 1024] (0 = one per core)");
  }

  ModelSession session;
  const auto start = std::chrono::steady_clock::now();
  XPD_ASSIGN_OR_RETURN(session.checkpoint, model::Checkpoint::Open(dir));
  load.load_mtp = options.load_mtp;
  load.progress = [](int64_t done, int64_t total) {
    std::cerr << absl::StrFormat("\rloading layers %d/%d", done, total) << std::flush;
  };
  if (options.before_load) XPD_RETURN_IF_ERROR(options.before_load(*session.checkpoint, &load));
  session.backend = kernels::MakeCpuBackend(static_cast<int>(threads));
  XPD_ASSIGN_OR_RETURN(
      session.model, model::DeepSeekModel::Load(*session.checkpoint, load, session.backend.get()));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cerr << absl::StrFormat("\rloaded %s in %.2fs on %s\n", dir, seconds,
                               session.backend->name());

  const model::ModelConfig& config = session.model->config();
  constexpr int32_t kBlockSize = 64;
  XPD_ASSIGN_OR_RETURN(
      session.pool,
      LatentKvPool::Create({.num_layers = session.model->cache_layers(),
                            .latent_dim = static_cast<int32_t>(config.latent_dim()),
                            .block_size = kBlockSize,
                            .num_blocks = std::max<int64_t>(
                                1, LatentKvPool::BlocksFor(options.kv_tokens, kBlockSize))}));
  return session;
}

}  // namespace xpd::runtime
