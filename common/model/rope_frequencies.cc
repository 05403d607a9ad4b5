#include "common/model/rope_frequencies.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace xpd::model {
namespace {

// Dimension index whose wavelength completes `rotations` turns over the
// original context ("find_correction_dim").
double CorrectionDim(double rotations, int dim, double base, double original_length) {
  return dim * std::log(original_length / (rotations * 2.0 * std::numbers::pi)) /
         (2.0 * std::log(base));
}

}  // namespace

std::vector<float> RopeInverseFrequencies(const ModelConfig& config) {
  const int dim = static_cast<int>(config.qk_rope_head_dim);
  const float base = static_cast<float>(config.rope_theta);
  std::vector<float> inv_freq(dim / 2);
  for (int i = 0; i < dim / 2; ++i) {
    inv_freq[i] = 1.0f / std::pow(base, static_cast<float>(2 * i) / static_cast<float>(dim));
  }
  if (!config.rope_scaling || config.rope_scaling->factor <= 1.0) return inv_freq;
  const RopeScaling& yarn = *config.rope_scaling;
  const double original = static_cast<double>(yarn.original_max_position_embeddings);
  double low = std::floor(CorrectionDim(yarn.beta_fast, dim, config.rope_theta, original));
  double high = std::ceil(CorrectionDim(yarn.beta_slow, dim, config.rope_theta, original));
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dim - 1));
  if (low == high) high += 0.001;
  const float factor = static_cast<float>(yarn.factor);
  for (int i = 0; i < dim / 2; ++i) {
    const float ramp = std::clamp(static_cast<float>((i - low) / (high - low)), 0.0f, 1.0f);
    const float smooth = 1.0f - ramp;
    inv_freq[i] = inv_freq[i] / factor * (1.0f - smooth) + inv_freq[i] * smooth;
  }
  return inv_freq;
}

}  // namespace xpd::model
