// Dummy checkpoints: Hugging Face DeepSeek-V3 checkpoint directories filled
// with deterministic random weights (like other servers' `--load-format
// dummy`), for tests, benchmarks and a built-in default model. Values are
// scaled so activations stay O(1) and MoE routing varies between tokens.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model/model_config.h"
#include "kernels/core/dtype.h"

namespace xpd::model {

// "default": real DeepSeek-V3 vocabulary (129280), tiny layers, writes in
// seconds. "small": ~1.18B parameters (173M active), 2.4 GB in BF16.
// "deepseek-v3": the real 671B config (FP8 128x128); for sizing only.
absl::StatusOr<ModelConfig> DummyPresetConfig(std::string_view preset);
std::vector<std::string> DummyPresetNames();

struct DummyWriteOptions {
  // kBF16, or kF8E4M3 (2-D projections in FP8 with amax/448 block scales;
  // block size from config.quantization, else 128x128).
  kernels::DType weights_dtype = kernels::DType::kBF16;
  uint64_t seed = 0;
  int num_shards = 1;   // 1: model.safetensors; >1: model-0000i-of-0000N + index
  int num_threads = 0;  // tensor-fill threads; 0 = hardware concurrency
  std::string preset;   // recorded in README.md only
  // When set, tokenizer.json and tokenizer_config.json are copied from this
  // directory so the checkpoint takes text prompts (the caller checks that
  // the tokenizer's ids fit the vocabulary). When empty, README.md records
  // `no_tokenizer_reason`.
  std::string tokenizer_dir;
  std::string no_tokenizer_reason;
  // Bytes of tensor data written so far, over all files, and the total.
  std::function<void(int64_t done, int64_t total)> progress;
};

// Creates `dir` if needed and writes config.json, README.md, the weights and
// (with options.tokenizer_dir) the tokenizer files. Weight and tokenizer
// files from an earlier run (model.safetensors, the index,
// model-*-of-*.safetensors, tokenizer*.json) are removed first so the
// directory is consistent.
// Values depend only on (seed, tensor name), never on threads or sharding.
// MTP embed_tokens / shared_head.head repeat model.embed_tokens / lm_head.
absl::Status WriteDummyCheckpoint(const ModelConfig& config, const std::string& dir,
                                  const DummyWriteOptions& options);

// Float32 to float8 e4m3fn, round-to-nearest-even, saturating at +-448;
// bit-identical to kernels::F32ToF8E4M3 but O(1) (exposed for the test).
uint8_t FastF32ToF8E4M3(float value);

}  // namespace xpd::model
