// Expert parallelism over the reference fixture: EP groups of 1, 2 and 4
// ranks (threads joined by the in-process EP transport), each holding only
// its placement's experts, must produce the reference greedy tokens and
// logits bit-identical to the single-process engine, with redundant
// replicas, with an idle rank, and across a placement switch mid-decode.
#include <cstring>
#include <random>
#include <thread>

#include "common/placement/expert_placement.h"
#include "common/transport/ep_group_exchange.h"
#include "common/transport/in_process_ep_transport.h"
#include "gtest/gtest.h"
#include "tests/model/fixture_model.h"

namespace xpd::testing {
namespace {

using placement::ExpertPlacement;

constexpr int kGenTokens = 8;
const char* const kPrompts[] = {"single_len7", "batch3/row1", "single_len1"};

// Logits of every step (prefill's last row, then each decode step) of every
// sequence, and its greedy tokens.
struct Trace {
  std::vector<std::vector<float>> logits;
  std::vector<int32_t> tokens;
};

struct Sequence {
  std::vector<int32_t> prompt;
  std::vector<int32_t> blocks;
  Trace trace;
};

// One rank's share of the work: its sequences prefilled, then decoded one
// token per step; a rank without sequences still runs every step's MoE
// exchanges. `before_step` lets a test act between steps (rollouts).
absl::Status RunRank(const FixtureModel& f, transport::EpGroupExchange* group,
                     std::vector<Sequence*> mine, int steps,
                     const std::function<void(int)>& before_step = {}) {
  const int64_t vocab = f.model->config().vocab_size;
  for (Sequence* s : mine) {
    const int64_t tokens = static_cast<int64_t>(s->prompt.size()) + kGenTokens;
    if (absl::Status st = f.pool->Allocate(
            runtime::LatentKvPool::BlocksFor(tokens, f.pool->block_size()), &s->blocks);
        !st.ok()) {
      return st;
    }
  }
  for (int step = 0; step < steps; ++step) {
    if (before_step) before_step(step);
    model::ForwardBatch batch;
    for (Sequence* s : mine) {
      if (step == 0) {
        batch.sequences.push_back({.tokens = s->prompt, .start = 0, .block_table = s->blocks});
      } else {
        batch.sequences.push_back(
            {.tokens = std::span<const int32_t>(&s->trace.tokens.back(), 1),
             .start = static_cast<int64_t>(s->prompt.size() + s->trace.tokens.size()) - 1,
             .block_table = s->blocks});
      }
    }
    const bool has_work = !batch.sequences.empty();
    if (group != nullptr) {
      absl::StatusOr<transport::StepPlan> plan = group->BeginStep(has_work);
      if (!plan.ok()) return plan.status();
      if (!has_work) {
        if (plan->any_work) {
          if (absl::Status st = f.model->IdleStep(); !st.ok()) return st;
        }
        continue;
      }
    }
    model::ForwardOutput out;
    if (absl::Status st = f.model->Forward(batch, f.pool->cache(), &out); !st.ok()) return st;
    for (size_t i = 0; i < mine.size(); ++i) {
      const float* row = &out.logits[out.first_row[i] * vocab];
      mine[i]->trace.logits.emplace_back(row, row + vocab);
      mine[i]->trace.tokens.push_back(ArgMax(row, vocab));
    }
  }
  return absl::OkStatus();
}

std::vector<Sequence> LoadPrompts() {
  std::vector<Sequence> sequences;
  for (const char* dir : kPrompts) {
    sequences.push_back({.prompt = LoadIds(ExpectedDir("bf16") + "/" + dir + "/prompt_ids.npy")});
  }
  return sequences;
}

// The single-process engine's traces, computed once.
const std::vector<Sequence>& SingleProcess() {
  static const std::vector<Sequence>* traces = [] {
    auto* sequences = new std::vector<Sequence>(LoadPrompts());
    FixtureModel f = LoadFixtureModel("bf16");
    std::vector<Sequence*> all;
    for (Sequence& s : *sequences) all.push_back(&s);
    const absl::Status status = RunRank(f, nullptr, all, kGenTokens);
    EXPECT_TRUE(status.ok()) << status;
    return sequences;
  }();
  return *traces;
}

std::vector<int32_t> MoeLayers() {
  FixtureModel f = LoadFixtureModel("bf16");
  return f.model->moe_layers();
}

// A placement that scatters experts and their replicas over the ranks.
ExpertPlacement Shuffled(const ExpertPlacement& base, int64_t epoch, uint32_t seed) {
  ExpertPlacement p = base;
  p.epoch = epoch;
  std::mt19937 rng(seed);
  for (std::vector<int32_t>& row : p.phy2log) {
    for (int32_t s = 0; s < p.slots_per_layer; ++s) {
      row[s] = s < p.num_experts ? s : static_cast<int32_t>(rng() % p.num_experts);  // replicas
    }
    std::shuffle(row.begin(), row.end(), rng);
  }
  return p;
}

bool Holds(const ExpertPlacement& p, int32_t rank, int64_t layer, int64_t expert) {
  const int32_t moe = p.MoeIndex(static_cast<int32_t>(layer));
  if (moe < 0) return false;
  for (int32_t e : p.HeldExperts(rank, moe)) {
    if (e == expert) return true;
  }
  return false;
}

void ExpectSameAsSingleProcess(const std::vector<Sequence>& got) {
  const std::vector<Sequence>& want = SingleProcess();
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].trace.tokens,
              LoadIds(ExpectedDir("bf16") + "/" + kPrompts[i] + "/gen_ids.npy"))
        << kPrompts[i];
    ASSERT_EQ(got[i].trace.logits.size(), want[i].trace.logits.size());
    for (size_t step = 0; step < got[i].trace.logits.size(); ++step) {
      const std::vector<float>& a = got[i].trace.logits[step];
      const std::vector<float>& b = want[i].trace.logits[step];
      EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0)
          << kPrompts[i] << " step " << step << " max diff "
          << MaxAbsDiff(a.data(), b.data(), static_cast<int64_t>(a.size()));
    }
  }
}

struct GroupCase {
  int32_t ranks;
  int32_t redundant;
  bool shuffled;
};

class ExpertParallelTest : public ::testing::TestWithParam<GroupCase> {};

TEST_P(ExpertParallelTest, MatchesSingleProcessBitForBit) {
  const GroupCase param = GetParam();
  const int32_t n = param.ranks;
  ExpertPlacement placement = placement::InitialPlacement(n, 16, param.redundant, MoeLayers());
  if (param.shuffled) placement = Shuffled(placement, 0, 7);
  ASSERT_TRUE(placement::ValidatePlacement(placement).ok());

  transport::InProcessEpHub hub(n);
  std::vector<FixtureModel> models;
  std::vector<std::unique_ptr<transport::EpGroupExchange>> groups;
  for (int32_t r = 0; r < n; ++r) {
    models.push_back(LoadFixtureModel(
        "bf16", kernels::Precision::kF32, BackendKind::kCpu, 1,
        [&, r](int64_t layer, int64_t expert) { return Holds(placement, r, layer, expert); }));
    ASSERT_NE(models.back().pool, nullptr);
    groups.push_back(std::make_unique<transport::EpGroupExchange>(hub.rank(r), placement));
    models.back().model->set_expert_exchange(groups.back().get());
  }
  // Prompt i goes to rank i % n: with 4 ranks, rank 3 has no tokens at all.
  std::vector<Sequence> sequences = LoadPrompts();
  std::vector<std::vector<Sequence*>> mine(n);
  for (size_t i = 0; i < sequences.size(); ++i) mine[i % n].push_back(&sequences[i]);
  std::vector<absl::Status> results(n);
  std::vector<std::thread> threads;
  for (int32_t r = 0; r < n; ++r) {
    threads.emplace_back(
        [&, r] { results[r] = RunRank(models[r], groups[r].get(), mine[r], kGenTokens); });
  }
  for (std::thread& t : threads) t.join();
  for (int32_t r = 0; r < n; ++r)
    ASSERT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r];
  ExpectSameAsSingleProcess(sequences);

  // Each rank counted the routing of its own tokens: 4 experts per token per layer.
  int64_t routed = 0;
  for (auto& g : groups) {
    for (int64_t c : g->TakeExpertLoad(nullptr)) routed += c;
  }
  int64_t tokens = 0;
  for (const Sequence& s : sequences) tokens += s.prompt.size() + kGenTokens - 1;
  EXPECT_EQ(routed, tokens * 4 * static_cast<int64_t>(placement.layers.size()));
}

INSTANTIATE_TEST_SUITE_P(Groups, ExpertParallelTest,
                         ::testing::Values(GroupCase{1, 0, false}, GroupCase{2, 0, false},
                                           GroupCase{4, 0, false}, GroupCase{2, 2, true},
                                           GroupCase{4, 4, true}),
                         [](const ::testing::TestParamInfo<GroupCase>& info) {
                           return "ep" + std::to_string(info.param.ranks) + "_redundant" +
                                  std::to_string(info.param.redundant) +
                                  (info.param.shuffled ? "_shuffled" : "");
                         });

// A rollout in the middle of decoding: every rank loads its new experts
// while the old placement serves, commits, and the group switches on one
// step; the old experts are released and outputs do not change.
TEST(ExpertParallelRolloutTest, SwitchMidDecodeKeepsOutputs) {
  const int32_t n = 2;
  const ExpertPlacement before = placement::InitialPlacement(n, 16, 2, MoeLayers());
  const ExpertPlacement after = Shuffled(before, 1, 11);
  transport::InProcessEpHub hub(n);
  std::vector<FixtureModel> models;
  std::vector<std::unique_ptr<transport::EpGroupExchange>> groups;
  std::vector<int> switched_at(n, -1);
  int current_step[2] = {0, 0};
  for (int32_t r = 0; r < n; ++r) {
    models.push_back(LoadFixtureModel(
        "bf16", kernels::Precision::kF32, BackendKind::kCpu, 1,
        [&, r](int64_t layer, int64_t expert) { return Holds(before, r, layer, expert); }));
    groups.push_back(std::make_unique<transport::EpGroupExchange>(hub.rank(r), before));
    model::DeepSeekModel* model = models.back().model.get();
    model->set_expert_exchange(groups.back().get());
    groups.back()->set_on_switch(
        [&, r, model](const ExpertPlacement& old_p, const ExpertPlacement& new_p) {
          switched_at[r] = current_step[r];
          for (size_t l = 0; l < new_p.layers.size(); ++l) {
            std::vector<int32_t> dropped;
            for (int32_t e : old_p.HeldExperts(r, static_cast<int32_t>(l))) {
              if (!Holds(new_p, r, new_p.layers[l], e)) dropped.push_back(e);
            }
            model->ReleaseRoutedExperts(new_p.layers[l], dropped);
          }
        });
  }
  std::vector<Sequence> sequences = LoadPrompts();
  std::vector<std::vector<Sequence*>> mine(n);
  for (size_t i = 0; i < sequences.size(); ++i) mine[i % n].push_back(&sequences[i]);
  std::vector<absl::Status> results(n);
  std::vector<std::thread> threads;
  for (int32_t r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      results[r] = RunRank(models[r], groups[r].get(), mine[r], kGenTokens, [&, r](int step) {
        current_step[r] = step;
        if (step != 3) return;
        // Prepare on this rank's own thread (as the rank's RPC would), then commit.
        for (size_t l = 0; l < after.layers.size(); ++l) {
          const absl::StatusOr<int64_t> loaded = models[r].model->LoadRoutedExperts(
              after.layers[l], after.HeldExperts(r, static_cast<int32_t>(l)));
          ASSERT_TRUE(loaded.ok()) << loaded.status();
        }
        ASSERT_TRUE(groups[r]->Stage(after).ok());
        ASSERT_TRUE(groups[r]->RequestCommit(1).ok());
      });
    });
  }
  for (std::thread& t : threads) t.join();
  for (int32_t r = 0; r < n; ++r) ASSERT_TRUE(results[r].ok()) << results[r];
  for (int32_t r = 0; r < n; ++r) {
    EXPECT_EQ(groups[r]->epoch(), 1);
    EXPECT_EQ(switched_at[r], 3) << "rank " << r;
    for (int32_t layer : after.layers) {
      for (int32_t e = 0; e < 16; ++e) {
        EXPECT_EQ(models[r].model->holds_expert(layer, e), Holds(after, r, layer, e))
            << "rank " << r << " layer " << layer << " expert " << e;
      }
    }
  }
  ExpectSameAsSingleProcess(sequences);
}

// An aborted epoch never serves; a commit that only some ranks were told
// about does not switch the group.
TEST(ExpertParallelRolloutTest, AbortAndPartialCommitKeepOldPlacement) {
  const ExpertPlacement before = placement::InitialPlacement(2, 16, 0, MoeLayers());
  const ExpertPlacement after = Shuffled(before, 1, 3);
  transport::InProcessEpHub hub(2);
  transport::EpGroupExchange a(hub.rank(0), before), b(hub.rank(1), before);
  ASSERT_TRUE(a.Stage(after).ok());
  ASSERT_TRUE(b.Stage(after).ok());
  EXPECT_EQ(b.RequestCommit(2).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(a.RequestCommit(1).ok());
  EXPECT_TRUE(a.StepRequested());  // it must announce the commit
  std::thread peer([&] { ASSERT_TRUE(b.BeginStep(false).ok()); });
  const absl::StatusOr<transport::StepPlan> plan = a.BeginStep(false);
  peer.join();
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_FALSE(plan->switched);
  EXPECT_FALSE(plan->any_work);
  EXPECT_FALSE(a.StepRequested());  // announced once, not a busy loop
  EXPECT_EQ(a.epoch(), 0);
  ASSERT_TRUE(a.Abort(1).ok());
  ASSERT_TRUE(b.Abort(1).ok());
  EXPECT_FALSE(b.staged().has_value());
  EXPECT_EQ(b.RequestCommit(1).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(a.WaitForEpoch(1, absl::Now() + absl::Milliseconds(10)).code(),
            absl::StatusCode::kDeadlineExceeded);
}

TEST(ExpertParallelGroupTest, ExchangeBeforeTheFirstStepIsRefusedNotAHang) {
  const ExpertPlacement p = placement::InitialPlacement(2, 16, 0, MoeLayers());
  transport::InProcessEpHub hub(2);
  transport::EpGroupExchange a(hub.rank(0), p);
  const absl::Status status =
      a.DispatchCombine({.layer = p.layers[0], .rows = 0, .hidden = 64, .top_k = 4},
                        [](std::span<const transport::ExpertBatch>) { return absl::OkStatus(); });
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
}

}  // namespace
}  // namespace xpd::testing
