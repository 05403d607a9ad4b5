#include "common/placement/eplb.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/placement/balance.h"
#include "common/placement/expert_placement.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace xpd::placement {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

// log2phy of one layer as rows of max_replicas, for readable expectations.
std::vector<std::vector<int32_t>> Log2PhyRows(const EplbResult& r, int32_t layer) {
  std::vector<std::vector<int32_t>> rows;
  for (int32_t e = 0; e < r.num_logical; ++e) {
    std::vector<int32_t> row;
    for (int32_t k = 0; k < r.max_replicas; ++k) row.push_back(r.Log2Phy(layer, e, k));
    rows.push_back(row);
  }
  return rows;
}

// Spec §7.1's worked example, every step of which is traced there.
TEST(EplbTest, SpecWorkedExample) {
  const std::vector<double> loads = {10, 20, 30, 40, 50, 70, 60, 80};
  absl::StatusOr<EplbResult> r = RebalanceExperts(loads, 1, 8, 12, 4, 2, 4);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->phy2log[0], ElementsAre(7, 6, 1, 7, 6, 0, 3, 2, 4, 5, 5, 4));
  EXPECT_THAT(r->logcnt[0], ElementsAre(1, 1, 1, 1, 2, 2, 2, 2));
  EXPECT_EQ(r->max_replicas, 2);
  EXPECT_EQ(Log2PhyRows(*r, 0),
            (std::vector<std::vector<int32_t>>{
                {5, -1}, {2, -1}, {7, -1}, {6, -1}, {8, 11}, {9, 10}, {1, 4}, {0, 3}}));
}

// The README of deepseek-ai/EPLB (commit d52c72d): 2 layers, 12 experts in 4
// groups, 16 replicas on 2 nodes x 4 GPUs; its printed phy2log.
TEST(EplbTest, ReferenceReadmeExample) {
  const std::vector<double> loads = {90, 132, 40,  61, 104, 165, 39,  4,   73,  56, 183, 86,
                                     20, 107, 104, 64, 19,  197, 187, 157, 172, 86, 16,  27};
  absl::StatusOr<EplbResult> r = RebalanceExperts(loads, 2, 12, 16, 4, 2, 8);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->phy2log[0], ElementsAre(5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1));
  EXPECT_THAT(r->phy2log[1], ElementsAre(7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1));
  EXPECT_THAT(r->logcnt[0], ElementsAre(1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1));
  EXPECT_THAT(r->logcnt[1], ElementsAre(1, 2, 1, 1, 1, 2, 2, 1, 2, 1, 1, 1));
}

// Global policy with every load per replica tied: redundant slots go to the
// lowest expert id (torch.max returns the first maximum), equal replicas are
// packed in slot order, and equal GPUs are filled lowest index first.
TEST(EplbTest, GlobalTiesGoToLowestIndex) {
  const std::vector<double> loads = {4, 4, 2, 2};
  absl::StatusOr<EplbResult> r = RebalanceExperts(loads, 1, 4, 6, 1, 1, 3);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->phy2log[0], ElementsAre(0, 3, 1, 0, 2, 1));
  EXPECT_THAT(r->logcnt[0], ElementsAre(2, 2, 1, 1));
  EXPECT_EQ(Log2PhyRows(*r, 0),
            (std::vector<std::vector<int32_t>>{{0, 3}, {2, 5}, {4, -1}, {1, -1}}));
}

// Inside a node the hierarchical policy numbers experts node-major with the
// heavier group first, so a tie in load per replica goes to expert 2 of the
// heavier group {2, 3}, not to expert 0; the global policy picks expert 0.
TEST(EplbTest, HierarchicalTiesFollowNodeMajorOrder) {
  const std::vector<double> loads = {3, 1, 3, 2};
  absl::StatusOr<EplbResult> hier = RebalanceExperts(loads, 1, 4, 5, 2, 1, 1);
  ASSERT_TRUE(hier.ok()) << hier.status();
  EXPECT_THAT(hier->logcnt[0], ElementsAre(1, 1, 2, 1));
  EXPECT_THAT(hier->phy2log[0], ElementsAre(0, 3, 2, 2, 1));
  EXPECT_EQ(Log2PhyRows(*hier, 0),
            (std::vector<std::vector<int32_t>>{{0, -1}, {4, -1}, {2, 3}, {1, -1}}));

  absl::StatusOr<EplbResult> global = RebalanceExperts(loads, 1, 4, 5, 1, 1, 1);
  ASSERT_TRUE(global.ok()) << global.status();
  EXPECT_THAT(global->logcnt[0], ElementsAre(2, 1, 1, 1));
  EXPECT_THAT(global->phy2log[0], ElementsAre(2, 3, 0, 0, 1));
}

TEST(EplbTest, GroupsNotDivisibleByNodesUseGlobalPolicy) {
  const std::vector<double> loads = {5, 1, 9, 2, 7, 3, 8, 1, 6, 4, 2, 3};
  absl::StatusOr<EplbResult> odd = RebalanceExperts(loads, 2, 6, 8, 3, 2, 4);
  absl::StatusOr<EplbResult> global = RebalanceExperts(loads, 2, 6, 8, 1, 1, 4);
  ASSERT_TRUE(odd.ok()) << odd.status();
  ASSERT_TRUE(global.ok()) << global.status();
  EXPECT_EQ(odd->phy2log, global->phy2log);
  EXPECT_EQ(odd->log2phy, global->log2phy);
}

// One slot per GPU and no redundancy: eplb.py's packing is the identity.
TEST(EplbTest, OneSlotPerGpuGlobalIsIdentity) {
  const std::vector<double> loads = {1, 9, 3, 7};
  absl::StatusOr<EplbResult> r = RebalanceExperts(loads, 1, 4, 4, 1, 1, 4);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->phy2log[0], ElementsAre(0, 1, 2, 3));
}

TEST(EplbTest, ArgumentErrorsNameTheArgument) {
  const std::vector<double> loads(16, 1.0);
  struct Case {
    std::vector<double> loads;
    int32_t layers, logical, replicas, groups, nodes, gpus;
    std::string argument;
  };
  const std::vector<Case> cases = {
      {loads, -1, 8, 8, 1, 1, 1, "num_layers"},
      {{}, 0, 0, 8, 1, 1, 1, "num_logical"},
      {loads, 2, 8, 6, 1, 1, 2, "num_replicas"},   // fewer than experts
      {loads, 2, 8, 10, 1, 1, 4, "num_replicas"},  // not a multiple of num_gpus
      {loads, 2, 8, 8, 1, 1, 0, "num_gpus"},
      {loads, 2, 8, 12, 4, 2, 3, "num_gpus"},  // not a multiple of num_nodes
      {loads, 2, 8, 8, 0, 1, 1, "num_groups"},
      {loads, 2, 8, 8, 1, 0, 1, "num_nodes"},
      {loads, 2, 8, 12, 3, 3, 3, "num_logical"},  // hierarchical: 8 % 3 groups
      {loads, 3, 8, 8, 1, 1, 1, "loads.size()"},
      {{1, 2, -1, 4}, 1, 4, 4, 1, 1, 1, "loads[2]"},
      {{1, NAN, 3, 4}, 1, 4, 4, 1, 1, 1, "loads[1]"},
      {{1, 2, 3, INFINITY}, 1, 4, 4, 1, 1, 1, "loads[3]"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<EplbResult> r =
        RebalanceExperts(c.loads, c.layers, c.logical, c.replicas, c.groups, c.nodes, c.gpus);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.argument;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.argument));
  }
}

TEST(EplbTest, BalancedPlacementKeepsShapeAndBumpsEpoch) {
  ExpertPlacement current = InitialPlacement(4, 8, 4, {3, 4});
  current.epoch = 41;
  const ExpertLoads loads = {{10, 20, 30, 40, 50, 70, 60, 80}, {1, 1, 1, 1, 1, 1, 1, 1}};
  absl::StatusOr<ExpertPlacement> next = BalancedPlacement(current, loads, 4, 2);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->epoch, 42);
  EXPECT_EQ(next->num_ranks, 4);
  EXPECT_EQ(next->num_experts, 8);
  EXPECT_EQ(next->slots_per_layer, 12);
  EXPECT_THAT(next->layers, ElementsAre(3, 4));
  EXPECT_THAT(next->phy2log[0], ElementsAre(7, 6, 1, 7, 6, 0, 3, 2, 4, 5, 5, 4));
  EXPECT_TRUE(ValidatePlacement(*next).ok());

  EXPECT_EQ(BalancedPlacement(current, {{1, 2}}, 4, 2).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BalancedPlacement(current, loads, 3, 1).status().code(),  // 8 experts, 3 groups
            absl::StatusCode::kInvalidArgument);
}

// A genuine gap of the algorithm, kept so that it is not mistaken for a bug:
// node 0 gets groups {0,1} and {4,5} (loads 2,1,3,0), replicates experts 4 and
// 0, and greedily packs replicas 1.5,1.5,1,1,1,0 three per GPU as
// {1.5,1,1},{1.5,1,0}: 3.5, where {1.5,1.5,0},{1,1,1} would give 3. Laying
// the experts out two per GPU without replicas also gives 3.
TEST(EplbTest, GreedyPackingCanLoseToNoReplication) {
  const std::vector<double> loads = {2, 1, 3, 0, 3, 0, 0, 0};
  absl::StatusOr<EplbResult> r = RebalanceExperts(loads, 1, 8, 12, 4, 2, 4);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->phy2log[0], ElementsAre(4, 0, 0, 4, 1, 5, 2, 2, 7, 2, 3, 6));
  const ExpertPlacement placement{.num_ranks = 4,
                                  .num_experts = 8,
                                  .slots_per_layer = 12,
                                  .layers = {3},
                                  .phy2log = r->phy2log};
  absl::StatusOr<PlacementBalance> eplb = EvaluateBalance(placement, {loads});
  absl::StatusOr<PlacementBalance> contiguous =
      EvaluateBalance(InitialPlacement(4, 8, 0, {3}), {loads});
  ASSERT_TRUE(eplb.ok() && contiguous.ok());
  EXPECT_DOUBLE_EQ(eplb->layer_max_load[0], 3.5);
  EXPECT_DOUBLE_EQ(contiguous->layer_max_load[0], 3.0);
}

// ---- Properties over random loads -------------------------------------

struct Shape {
  int32_t experts, replicas, groups, nodes, gpus;
  // Whether the plan is checked against the no-replication layout; see
  // NoReplicationMaxLoad and GreedyPackingCanLoseToNoReplication.
  bool beats_no_replication;
};

std::string ShapeName(const Shape& s) {
  return absl::StrCat(s.experts, "e/", s.replicas, "s/", s.groups, "g/", s.nodes, "n/", s.gpus,
                      "gpu");
}

enum class Dist { kUniform, kSmallIntegers, kZipf, kSparse, kOneHot, kEqual, kZeros };
constexpr Dist kDists[] = {Dist::kUniform, Dist::kSmallIntegers, Dist::kZipf, Dist::kSparse,
                           Dist::kOneHot,  Dist::kEqual,         Dist::kZeros};
const char* DistName(Dist d) {
  switch (d) {
    case Dist::kUniform:
      return "uniform";
    case Dist::kSmallIntegers:
      return "small-integers";
    case Dist::kZipf:
      return "zipf";
    case Dist::kSparse:
      return "sparse";
    case Dist::kOneHot:
      return "one-hot";
    case Dist::kEqual:
      return "equal";
    case Dist::kZeros:
      return "zeros";
  }
  return "?";
}

// Hand-rolled draws: std:: distributions differ between standard libraries
// and these loads must be the same everywhere.
class Rng {
 public:
  explicit Rng(uint64_t seed) : gen_(seed) {}
  double Uniform() { return static_cast<double>(gen_() >> 11) * 0x1.0p-53; }
  int32_t Below(int32_t n) { return static_cast<int32_t>(gen_() % static_cast<uint64_t>(n)); }

 private:
  std::mt19937_64 gen_;
};

std::vector<double> DrawLayer(Dist d, int32_t n, Rng& rng) {
  std::vector<double> w(n);
  switch (d) {
    case Dist::kUniform:
      for (double& x : w) x = rng.Uniform() * 1000;
      break;
    case Dist::kSmallIntegers:  // many exact ties
      for (double& x : w) x = rng.Below(4);
      break;
    case Dist::kZipf: {  // popularity ~ 1/rank^s over a random ranking
      const double s = 0.8 + rng.Uniform();
      std::vector<int32_t> rank(n);
      std::iota(rank.begin(), rank.end(), 0);
      for (int32_t i = n - 1; i > 0; --i) std::swap(rank[i], rank[rng.Below(i + 1)]);
      for (int32_t e = 0; e < n; ++e) w[e] = std::round(1e5 / std::pow(rank[e] + 1, s));
      break;
    }
    case Dist::kSparse:
      for (double& x : w) x = rng.Uniform() < 0.9 ? 0 : rng.Uniform() * 100;
      break;
    case Dist::kOneHot:
      std::fill(w.begin(), w.end(), 1);
      w[rng.Below(n)] = 1000;
      break;
    case Dist::kEqual:
      std::fill(w.begin(), w.end(), 7);
      break;
    case Dist::kZeros:
      break;
  }
  return w;
}

// Max rank load of the fair no-replication baseline: experts laid
// contiguously, as even in count as possible (rank r holds experts
// [r*E/ranks, (r+1)*E/ranks)), each carrying its full load, redundant slots
// unused. This is InitialPlacement(ranks, E, 0) when ranks divide E. It is
// the layout a cluster without redundant experts serves with, and it gets no
// help from the redundant slots, so beating it is what those slots and the
// load-aware packing are for. The cold-start layout with redundancy
// (InitialPlacement(ranks, E, R - E)) is not a fair yardstick: it replicates
// experts 0..R-E-1 whatever their load, which on a lucky draw is the perfect
// choice, and a greedy heuristic cannot promise to beat a lucky guess.
double NoReplicationMaxLoad(const std::vector<double>& w, int32_t ranks) {
  const int64_t n = static_cast<int64_t>(w.size());
  double max_load = 0;
  for (int64_t r = 0; r < ranks; ++r) {
    double load = 0;
    for (int64_t e = r * n / ranks; e < (r + 1) * n / ranks; ++e) load += w[e];
    max_load = std::max(max_load, load);
  }
  return max_load;
}

class EplbPropertyTest : public ::testing::TestWithParam<Shape> {};

TEST_P(EplbPropertyTest, ValidPlan) {
  const Shape shape = GetParam();
  const bool hierarchical = shape.groups % shape.nodes == 0;
  constexpr int32_t kLayers = 3;
  for (const Dist dist : kDists) {
    for (uint64_t seed = 1; seed <= 25; ++seed) {
      SCOPED_TRACE(absl::StrCat(ShapeName(shape), " ", DistName(dist), " seed ", seed));
      Rng rng(seed * 1000003 + static_cast<uint64_t>(dist));
      ExpertLoads loads;
      for (int32_t l = 0; l < kLayers; ++l) loads.push_back(DrawLayer(dist, shape.experts, rng));
      std::vector<double> flat;
      for (const auto& row : loads) flat.insert(flat.end(), row.begin(), row.end());
      absl::StatusOr<EplbResult> r = RebalanceExperts(flat, kLayers, shape.experts, shape.replicas,
                                                      shape.groups, shape.nodes, shape.gpus);
      ASSERT_TRUE(r.ok()) << r.status();

      ExpertPlacement placement{.num_ranks = shape.gpus,
                                .num_experts = shape.experts,
                                .slots_per_layer = shape.replicas,
                                .layers = {3, 4, 5},
                                .phy2log = r->phy2log};
      ASSERT_TRUE(ValidatePlacement(placement).ok()) << ValidatePlacement(placement);
      absl::StatusOr<PlacementBalance> balance = EvaluateBalance(placement, loads);
      ASSERT_TRUE(balance.ok()) << balance.status();

      int32_t widest = 0;
      for (int32_t l = 0; l < kLayers; ++l) {
        ASSERT_EQ(r->phy2log[l].size(), static_cast<size_t>(shape.replicas));
        std::vector<int32_t> count(shape.experts, 0);
        for (const int32_t e : r->phy2log[l]) ++count[e];
        EXPECT_EQ(r->logcnt[l], count);
        for (int32_t e = 0; e < shape.experts; ++e) {
          ASSERT_GE(r->logcnt[l][e], 1);
          widest = std::max(widest, r->logcnt[l][e]);
          std::vector<int32_t> slots;
          for (int32_t k = 0; k < r->max_replicas; ++k) {
            const int32_t slot = r->Log2Phy(l, e, k);
            if (k < r->logcnt[l][e]) {
              ASSERT_GE(slot, 0);
              ASSERT_LT(slot, shape.replicas);
              EXPECT_EQ(r->phy2log[l][slot], e);
              slots.push_back(slot);
            } else {
              EXPECT_EQ(slot, -1);
            }
          }
          std::sort(slots.begin(), slots.end());
          EXPECT_EQ(std::adjacent_find(slots.begin(), slots.end()), slots.end());
        }
        if (hierarchical) {  // every replica of a group's experts on one node
          const int32_t group_size = shape.experts / shape.groups;
          const int32_t slots_per_node = shape.replicas / shape.nodes;
          std::vector<int32_t> node_of_group(shape.groups, -1);
          for (int32_t s = 0; s < shape.replicas; ++s) {
            int32_t& node = node_of_group[r->phy2log[l][s] / group_size];
            if (node < 0) node = s / slots_per_node;
            EXPECT_EQ(node, s / slots_per_node) << "slot " << s;
          }
        }
        if (shape.beats_no_replication) {
          const double baseline = NoReplicationMaxLoad(loads[l], shape.gpus);
          EXPECT_LE(balance->layer_max_load[l], baseline * (1 + 1e-12))
              << "layer " << l << " balance " << balance->layer_balance[l];
        }
      }
      EXPECT_EQ(r->max_replicas, widest);
    }
  }
}

// The no-replication check is not a theorem: balanced_packing is a greedy
// heuristic and can lose to a fixed layout. With few replicas per GPU it does
// on a few percent of random draws (up to 17% worse on 8e/12s/4gpu, see
// GreedyPackingCanLoseToNoReplication); with one or two per GPU its pairing is
// optimal, and at DeepSeek-V3 scale (8+ replicas per GPU) no loss was seen in
// 3000 draws per shape and distribution, which these shapes hold it to.
INSTANTIATE_TEST_SUITE_P(
    Shapes, EplbPropertyTest,
    ::testing::Values(Shape{8, 12, 4, 2, 4, false}, Shape{12, 16, 4, 2, 8, false},
                      Shape{16, 24, 4, 2, 8, false}, Shape{32, 40, 4, 4, 8, false},
                      Shape{8, 8, 4, 2, 4, true}, Shape{6, 6, 3, 1, 3, true},
                      Shape{64, 72, 8, 3, 6, true}, Shape{256, 256, 8, 4, 32, true},
                      Shape{256, 288, 8, 4, 32, true}, Shape{256, 288, 8, 2, 16, true},
                      Shape{256, 288, 8, 1, 32, true}, Shape{256, 288, 1, 1, 32, true},
                      Shape{256, 320, 8, 8, 64, true}, Shape{256, 288, 8, 8, 288, true}),
    [](const ::testing::TestParamInfo<Shape>& info) {
      std::string name = ShapeName(info.param);
      std::replace(name.begin(), name.end(), '/', '_');
      return name;
    });

}  // namespace
}  // namespace xpd::placement
