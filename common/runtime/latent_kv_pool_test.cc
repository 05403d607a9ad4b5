#include "common/runtime/latent_kv_pool.h"

#include <set>

#include "gtest/gtest.h"

namespace xpd::runtime {
namespace {

TEST(LatentKvPoolTest, AllocatesDistinctBlocksAndFreesThem) {
  auto pool =
      LatentKvPool::Create({.num_layers = 2, .latent_dim = 8, .block_size = 4, .num_blocks = 5});
  ASSERT_TRUE(pool.ok()) << pool.status();
  std::vector<int32_t> a, b;
  ASSERT_TRUE((*pool)->Reserve(9, &a).ok());  // 3 blocks for 9 tokens of 4
  EXPECT_EQ(a.size(), 3u);
  ASSERT_TRUE((*pool)->Reserve(9, &a).ok());  // already covered
  EXPECT_EQ(a.size(), 3u);
  ASSERT_TRUE((*pool)->Allocate(2, &b).ok());
  std::set<int32_t> all(a.begin(), a.end());
  all.insert(b.begin(), b.end());
  EXPECT_EQ(all.size(), 5u);
  EXPECT_EQ((*pool)->num_free_blocks(), 0);
  (*pool)->Free(b);
  EXPECT_EQ((*pool)->num_free_blocks(), 2);
}

TEST(LatentKvPoolTest, FullPoolIsResourceExhaustedAndUnchanged) {
  auto pool =
      LatentKvPool::Create({.num_layers = 1, .latent_dim = 4, .block_size = 2, .num_blocks = 2});
  ASSERT_TRUE(pool.ok());
  std::vector<int32_t> table;
  absl::Status status = (*pool)->Reserve(5, &table);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(table.empty());
  EXPECT_EQ((*pool)->num_free_blocks(), 2);
}

TEST(LatentKvPoolTest, RowsOfDifferentBlocksAndLayersDoNotOverlap) {
  auto pool =
      LatentKvPool::Create({.num_layers = 3, .latent_dim = 4, .block_size = 2, .num_blocks = 4});
  ASSERT_TRUE(pool.ok());
  const kernels::PagedLatentCache& cache = (*pool)->cache();
  const int32_t table[] = {3, 1};
  std::set<float*> rows;
  for (int layer = 0; layer < 3; ++layer) {
    for (int pos = 0; pos < 4; ++pos) rows.insert(cache.Row(table, layer, pos));
  }
  EXPECT_EQ(rows.size(), 12u);
}

TEST(LatentKvPoolTest, RejectsBadOptions) {
  EXPECT_FALSE(LatentKvPool::Create({.num_layers = 0, .latent_dim = 4, .num_blocks = 1}).ok());
}

}  // namespace
}  // namespace xpd::runtime
