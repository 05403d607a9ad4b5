// Buffers for the temporaries of one forward pass, reused by every layer.
// Allocated per layer, each prefill layer got tens of MB of fresh mmap'ed,
// page-faulted and zero-filled memory (a 512-token `small` bench run took 390k
// page faults; 271k with this, most of them the bench's own bandwidth probe).
// A slot grows once per pass and is then reused by the layers after it.
#pragma once

#include <array>
#include <cstdint>
#include <memory>

namespace xpd::model {

// One slot per temporary that can be live at the same time as the others.
enum class ScratchSlot : int {
  kNormed,         // RMSNorm(h), the input of attention and of the FFN
  kFfnOperand,     // kBF16 compute: the FFN input rounded once for all its products
  kQueryLatent,    // c_q
  kQuery,          // q, all heads
  kKvLatent,       // [c_kv | k_pe] of the new rows
  kAttentionOut,   // per-head attention output before o_proj
  kAbsorbedQuery,  // latent form: [W_UK^T q_nope | q_pe]
  kLatentOut,      // latent form: attention output in latent space
  kMhaLatents,     // MHA form: the cached latents of every visible position
  kMhaKeysValues,  // MHA form: their up-projected keys and values
  kRouterLogits,
  kRoutedOut,  // combined routed-expert output
  kSharedOut,  // shared-expert output
  kMlpGate,    // dense/shared SwiGLU
  kMlpUp,
  kExpertGate,  // routed experts, all held experts' rows together
  kExpertUp,
  kCount,
};

class ForwardScratch {
 public:
  // At least `count` floats, contents unspecified. The pointer stays valid
  // until the same slot is requested again.
  float* Floats(ScratchSlot slot, int64_t count) {
    Buffer& b = buffers_[static_cast<int>(slot)];
    if (b.size < count) {
      b.data.reset(new float[count]);  // default-initialized: not zero-filled
      b.size = count;
    }
    return b.data.get();
  }

 private:
  struct Buffer {
    std::unique_ptr<float[]> data;
    int64_t size = 0;
  };
  std::array<Buffer, static_cast<int>(ScratchSlot::kCount)> buffers_;
};

}  // namespace xpd::model
