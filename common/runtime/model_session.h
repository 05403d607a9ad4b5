// What every model-running command shares: open a checkpoint directory, pick
// the compute precision and thread count from flags, build the backend, load
// the weights with progress on stderr, and size a KV pool.
#pragma once

#include <functional>
#include <memory>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "common/base/command_flags.h"
#include "common/model/checkpoint.h"
#include "common/model/deepseek_model.h"
#include "common/runtime/latent_kv_pool.h"
#include "kernels/backend/backend.h"

namespace xpd::runtime {

struct ModelSession {
  std::unique_ptr<model::Checkpoint> checkpoint;
  std::unique_ptr<kernels::Backend> backend;
  std::unique_ptr<model::DeepSeekModel> model;
  std::unique_ptr<LatentKvPool> pool;
};

struct ModelSessionOptions {
  bool load_mtp = false;
  int64_t kv_tokens = 0;  // capacity of the KV pool in tokens (all sequences together)
  // Runs once the checkpoint is open, before any weight loads: an
  // expert-parallel rank picks the routed experts it holds here.
  std::function<absl::Status(const model::Checkpoint&, model::LoadOptions*)> before_load;
};

// Flags read: --model DIR (required), --compute f32|bf16, --threads N.
absl::StatusOr<ModelSession> OpenModelSession(const base::CommandFlags& flags,
                                              const ModelSessionOptions& options);

// Value and switch flags every model command accepts.
inline const std::set<std::string> kModelValueFlags = {"model", "compute", "threads"};

}  // namespace xpd::runtime
