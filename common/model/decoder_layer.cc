#include "common/model/decoder_layer.h"

#include "common/base/status_macros.h"

namespace xpd::model {

absl::Status Project(const LayerContext& c, const kernels::WeightMatrix& w, const float* x,
                     int64_t x_stride, float* y, int64_t y_stride, int64_t rows,
                     kernels::OutputMode mode) {
  return c.backend.MatMul({.x = x,
                           .x_stride = x_stride,
                           .w = &w,
                           .y = y,
                           .y_stride = y_stride,
                           .m = rows,
                           .precision = c.precision,
                           .output = mode});
}

absl::Status RunDecoderLayer(const LayerContext& c, const DecoderLayerWeights& w,
                             int32_t cache_layer, float* h) {
  const int64_t d = c.config.hidden_size;
  const float eps = static_cast<float>(c.config.rms_norm_eps);
  float* x = c.scratch.Floats(ScratchSlot::kNormed, c.rows * d);
  XPD_RETURN_IF_ERROR(c.backend.RmsNorm({.x = h,
                                         .weight = w.attention.input_norm.data(),
                                         .y = x,
                                         .rows = c.rows,
                                         .dim = d,
                                         .eps = eps}));
  XPD_RETURN_IF_ERROR(RunAttentionBlock(c, w.attention, cache_layer, x, h));
  XPD_RETURN_IF_ERROR(c.backend.RmsNorm({.x = h,
                                         .weight = w.post_attention_norm.data(),
                                         .y = x,
                                         .rows = c.rows,
                                         .dim = d,
                                         .eps = eps}));
  return RunFfnBlock(c, w, cache_layer, x, h);
}

}  // namespace xpd::model
