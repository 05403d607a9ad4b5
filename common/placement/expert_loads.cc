#include "common/placement/expert_loads.h"

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"

namespace xpd::placement {

absl::Status ValidateLoadValues(absl::Span<const double> values, const char* argument) {
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i]) || values[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(argument, "[", i, "] = ", values[i], ", loads must be finite and >= 0"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateLoads(const ExpertPlacement& placement, const ExpertLoads& loads) {
  if (loads.size() != placement.layers.size()) {
    return absl::InvalidArgumentError(absl::StrCat("loads: ", loads.size(), " rows for ",
                                                   placement.layers.size(), " MoE layers"));
  }
  for (size_t l = 0; l < loads.size(); ++l) {
    if (static_cast<int64_t>(loads[l].size()) != placement.num_experts) {
      return absl::InvalidArgumentError(
          absl::StrCat("loads: row ", l, " (layer ", placement.layers[l], ") has ", loads[l].size(),
                       " values for ", placement.num_experts, " experts"));
    }
    const std::string name = absl::StrCat("loads[", l, "]");
    if (absl::Status s = ValidateLoadValues(loads[l], name.c_str()); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace xpd::placement
