// A Hugging Face DeepSeek-V3 checkpoint directory: config.json plus either
// model.safetensors or model.safetensors.index.json with its shards. Shards
// are opened (mmap'ed) lazily, when a tensor they hold is first requested, so
// a rank that needs a subset of the experts never maps the other shards.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/model/model_config.h"
#include "common/model/safetensors_file.h"

namespace xpd::model {

class Checkpoint {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);

  const ModelConfig& config() const { return config_; }
  const std::string& dir() const { return dir_; }
  bool Has(const std::string& name) const;

  // Looks a tensor up and checks it. Errors name file, tensor and reason:
  //   "<dir>/model.safetensors: tensor 'model.norm.weight': shape [32] != expected [64]"
  //   "<dir>: tensor 'lm_head.weight': missing from checkpoint"
  // `dtypes` lists the acceptable dtypes; `shape` the exact expected shape.
  absl::StatusOr<TensorView> Get(const std::string& name, std::span<const kernels::DType> dtypes,
                                 std::span<const int64_t> shape) const;
  // Same without checks (for tools).
  absl::StatusOr<TensorView> GetAny(const std::string& name) const;

  std::vector<std::string> TensorNames() const;  // all names the index (or file) declares
  // Number of distinct files mapped so far (tests assert lazy opening with it).
  int num_files_opened() const;

 private:
  Checkpoint() = default;
  absl::StatusOr<const SafetensorsFile*> OpenFile(const std::string& file) const;

  std::string dir_;
  ModelConfig config_;
  absl::flat_hash_map<std::string, std::string> tensor_to_file_;  // file name relative to dir_
  mutable absl::Mutex mutex_;
  mutable absl::flat_hash_map<std::string, std::unique_ptr<SafetensorsFile>> files_;
};

}  // namespace xpd::model
