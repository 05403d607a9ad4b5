// Rotary frequencies of MLA's rope channels, with DeepSeek-V3's YaRN
// correction (spec §3.5.1) applied whenever rope_scaling is present.
#pragma once

#include <vector>

#include "common/model/model_config.h"

namespace xpd::model {

// inv_freq[i] for i in [0, qk_rope_head_dim / 2), computed in f32 like the reference.
std::vector<float> RopeInverseFrequencies(const ModelConfig& config);

}  // namespace xpd::model
