// Streams a .safetensors file (or a sharded set with its index) without ever
// holding all tensors in memory: tensors are declared with a fill callback,
// and Write() lays them out, writes the header, then fills and writes each
// tensor's bytes in turn (several at a time when asked to use threads).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/core/dtype.h"

namespace xpd::model {

class SafetensorsWriter {
 public:
  // Receives the tensor's whole byte range (little-endian, row-major) to fill.
  // Fills of different tensors may run concurrently on different threads; each
  // fill runs once per Write().
  using FillFn = std::function<void(std::span<std::byte>)>;
  // Progress: bytes of tensor data written so far and in total. Called with
  // an internal lock held, from whichever thread finished a tensor.
  using ProgressFn = std::function<void(int64_t done, int64_t total)>;

  // Errors: duplicate or empty name, negative dimension.
  absl::Status Add(const std::string& name, kernels::DType dtype, std::vector<int64_t> shape,
                   FillFn fill);
  // Any safetensors dtype by name (e.g. "I64" with element size 8), for
  // tests and tools that need dtypes xpd does not compute with.
  absl::Status AddRaw(const std::string& name, const std::string& dtype, int element_size,
                      std::vector<int64_t> shape, FillFn fill);
  // "__metadata__" entries; {"format": "pt"} is always written, as torch does.
  void SetMetadata(const std::string& key, const std::string& value);

  // Layout like the reference checkpoints: tensors ordered by element size
  // (largest first), then by name, so every tensor is aligned to its element
  // size; the header is space-padded to a multiple of 8 bytes. The file is
  // written to `path + ".tmp"` and renamed, so a failed write leaves no
  // half-written checkpoint under the final name.
  absl::Status Write(const std::string& path, int num_threads = 1,
                     const ProgressFn& progress = nullptr) const;

  int64_t data_bytes() const;  // sum of tensor sizes
  size_t num_tensors() const { return tensors_.size(); }

 private:
  struct Tensor {
    std::string name;
    std::string dtype;
    int element_size = 0;
    std::vector<int64_t> shape;
    int64_t size_bytes = 0;
    FillFn fill;
  };
  std::vector<Tensor> tensors_;
  std::map<std::string, std::string> metadata_ = {{"format", "pt"}};
};

// Writes model.safetensors.index.json: {"metadata": {"total_size": N},
// "weight_map": {tensor: shard file name}} with names sorted.
absl::Status WriteSafetensorsIndex(const std::string& path,
                                   const std::map<std::string, std::string>& weight_map,
                                   int64_t total_size);

// "model-00002-of-00005.safetensors" for shard 1 of 5 (0-based `shard`).
std::string ShardFileName(int shard, int num_shards);

}  // namespace xpd::model
