// The paged MLA latent cache of one rank: a fixed pool of blocks handed to
// sequences and taken back when they finish. Fixed-size allocation up front
// means a full pool is a clear RESOURCE_EXHAUSTED, never unbounded growth.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kernels/attention/paged_latent_cache.h"

namespace xpd::runtime {

struct LatentKvPoolOptions {
  int32_t num_layers = 0;
  int32_t latent_dim = 0;
  int32_t block_size = 64;  // FlashMLA's page size
  int64_t num_blocks = 0;
};

class LatentKvPool {
 public:
  static absl::StatusOr<std::unique_ptr<LatentKvPool>> Create(const LatentKvPoolOptions& options);

  const kernels::PagedLatentCache& cache() const { return cache_; }
  int32_t block_size() const { return cache_.block_size; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t num_free_blocks() const;
  int64_t bytes() const;
  static int64_t BlocksFor(int64_t tokens, int32_t block_size) {
    return (tokens + block_size - 1) / block_size;
  }

  // Appends `count` blocks to `table`; RESOURCE_EXHAUSTED (and no change) when
  // fewer are free.
  absl::Status Allocate(int64_t count, std::vector<int32_t>* table);
  // Makes `table` cover `tokens` positions.
  absl::Status Reserve(int64_t tokens, std::vector<int32_t>* table);
  void Free(std::span<const int32_t> blocks);

 private:
  LatentKvPool() = default;
  std::unique_ptr<float[]> storage_;
  kernels::PagedLatentCache cache_;
  int64_t num_blocks_ = 0;
  mutable absl::Mutex mutex_;
  std::vector<int32_t> free_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace xpd::runtime
