#include "services/controller/expert_load_window.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace xpd::controller {

absl::StatusOr<std::vector<int64_t>> AlignExpertLoad(const placement::ExpertPlacement& placement,
                                                     const xpd::v1::ExpertLoad& load) {
  if (load.num_experts() != placement.num_experts) {
    return absl::InvalidArgumentError(absl::StrCat("expert_load.num_experts = ", load.num_experts(),
                                                   ", the group has ", placement.num_experts,
                                                   " experts"));
  }
  const int64_t expected = static_cast<int64_t>(load.layers_size()) * load.num_experts();
  if (load.tokens_size() != expected) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expert_load.tokens has ", load.tokens_size(), " values, expected layers (",
        load.layers_size(), ") * num_experts (", load.num_experts(), ") = ", expected));
  }
  const size_t experts = static_cast<size_t>(placement.num_experts);
  std::vector<int64_t> dense(placement.layers.size() * experts, 0);
  std::vector<bool> seen(placement.layers.size(), false);
  for (int i = 0; i < load.layers_size(); ++i) {
    const int32_t moe = placement.MoeIndex(load.layers(i));
    if (moe < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "expert_load.layers[", i, "] = ", load.layers(i), " is not a MoE layer of the group"));
    }
    if (seen[moe]) {
      return absl::InvalidArgumentError(
          absl::StrCat("expert_load.layers[", i, "] = ", load.layers(i), " is repeated"));
    }
    seen[moe] = true;
    for (size_t e = 0; e < experts; ++e) {
      const int64_t tokens = load.tokens(static_cast<int>(i * experts + e));
      if (tokens < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("expert_load.tokens[", i * experts + e, "] = ", tokens, " is negative"));
      }
      dense[moe * experts + e] = tokens;
    }
  }
  return dense;
}

ExpertLoadWindow::ExpertLoadWindow(int32_t num_moe_layers, int32_t num_experts,
                                   absl::Duration window)
    : num_moe_layers_(num_moe_layers),
      num_experts_(num_experts),
      window_(window),
      bucket_width_(std::max(window / kBuckets, absl::Milliseconds(1))),
      totals_(static_cast<size_t>(num_moe_layers) * num_experts, 0) {}

void ExpertLoadWindow::Add(absl::Time now, const std::vector<int64_t>& dense) {
  Expire(now);
  absl::Duration remainder;
  const int64_t index = absl::IDivDuration(now - absl::UnixEpoch(), bucket_width_, &remainder);
  // A clock stepping back lands in the newest bucket rather than reordering.
  if (buckets_.empty() || buckets_.back().index < index) {
    buckets_.push_back(
        {.index = index, .newest = now, .tokens = std::vector<int64_t>(dense.size())});
  }
  Bucket& bucket = buckets_.back();
  bucket.newest = std::max(bucket.newest, now);
  for (size_t i = 0; i < dense.size(); ++i) {
    bucket.tokens[i] += dense[i];
    totals_[i] += dense[i];
    total_tokens_ += dense[i];
  }
}

void ExpertLoadWindow::Expire(absl::Time now) {
  while (!buckets_.empty() && now - buckets_.front().newest > window_) {
    const std::vector<int64_t>& tokens = buckets_.front().tokens;
    for (size_t i = 0; i < tokens.size(); ++i) {
      totals_[i] -= tokens[i];
      total_tokens_ -= tokens[i];
    }
    buckets_.pop_front();
  }
}

placement::ExpertLoads ExpertLoadWindow::Loads() const {
  placement::ExpertLoads loads(num_moe_layers_, std::vector<double>(num_experts_));
  for (int32_t l = 0; l < num_moe_layers_; ++l) {
    for (int32_t e = 0; e < num_experts_; ++e) {
      loads[l][e] = static_cast<double>(totals_[static_cast<size_t>(l) * num_experts_ + e]);
    }
  }
  return loads;
}

}  // namespace xpd::controller
