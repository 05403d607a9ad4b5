#include "common/runtime/latent_kv_pool.h"

#include "absl/strings/str_cat.h"

namespace xpd::runtime {

absl::StatusOr<std::unique_ptr<LatentKvPool>> LatentKvPool::Create(
    const LatentKvPoolOptions& options) {
  if (options.num_layers <= 0 || options.latent_dim <= 0 || options.block_size <= 0 ||
      options.num_blocks <= 0 || options.num_blocks > INT32_MAX) {
    return absl::InvalidArgumentError(
        "LatentKvPool: layers, latent_dim, block_size and "
        "num_blocks must be positive");
  }
  auto pool = std::unique_ptr<LatentKvPool>(new LatentKvPool());
  pool->cache_ = {.num_layers = options.num_layers,
                  .block_size = options.block_size,
                  .latent_dim = options.latent_dim};
  const int64_t elements = pool->cache_.block_elements() * options.num_blocks;
  pool->storage_.reset(new (std::nothrow) float[elements]);
  if (!pool->storage_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("LatentKvPool: cannot allocate ", elements * 4, " bytes"));
  }
  pool->cache_.pool = pool->storage_.get();
  pool->num_blocks_ = options.num_blocks;
  pool->free_.reserve(options.num_blocks);
  // Hand out low block ids first (stack: pop from the back).
  for (int64_t b = options.num_blocks - 1; b >= 0; --b) {
    pool->free_.push_back(static_cast<int32_t>(b));
  }
  return pool;
}

int64_t LatentKvPool::num_free_blocks() const {
  absl::MutexLock lock(&mutex_);
  return static_cast<int64_t>(free_.size());
}

int64_t LatentKvPool::bytes() const { return cache_.block_elements() * num_blocks_ * 4; }

absl::Status LatentKvPool::Allocate(int64_t count, std::vector<int32_t>* table) {
  absl::MutexLock lock(&mutex_);
  if (count > static_cast<int64_t>(free_.size())) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache full: need ", count, " blocks, ",
                                                     free_.size(), " free of ", num_blocks_));
  }
  for (int64_t i = 0; i < count; ++i) {
    table->push_back(free_.back());
    free_.pop_back();
  }
  return absl::OkStatus();
}

absl::Status LatentKvPool::Reserve(int64_t tokens, std::vector<int32_t>* table) {
  const int64_t need = BlocksFor(tokens, cache_.block_size) - static_cast<int64_t>(table->size());
  return need > 0 ? Allocate(need, table) : absl::OkStatus();
}

void LatentKvPool::Free(std::span<const int32_t> blocks) {
  absl::MutexLock lock(&mutex_);
  for (int32_t b : blocks) free_.push_back(b);
}

}  // namespace xpd::runtime
