// Addressing of the paged MLA latent cache. Per token and layer the cache
// holds latent_dim = kv_lora_rank + qk_rope_head_dim floats: the normalized
// latent c_kv followed by the rotated k_pe. Memory is a pool of blocks; one
// block holds `block_size` consecutive positions of one sequence for every
// layer ([layers][block_size][latent_dim]), so moving a request's pages
// between ranks moves whole blocks.
#pragma once

#include <cstdint>

namespace xpd::kernels {

struct PagedLatentCache {
  float* pool = nullptr;  // [num_blocks][num_layers][block_size][latent_dim]
  int32_t num_layers = 0;
  int32_t block_size = 64;
  int32_t latent_dim = 0;

  int64_t block_elements() const { return int64_t{num_layers} * block_size * latent_dim; }
  float* Row(const int32_t* block_table, int32_t layer, int64_t position) const {
    return pool + block_table[position / block_size] * block_elements() +
           (int64_t{layer} * block_size + position % block_size) * latent_dim;
  }
};

}  // namespace xpd::kernels
