#include "common/rpc/sampling_conversion.h"

namespace xpd::rpc {

runtime::SamplingParams ToSamplingParams(const xpd::v1::SamplingParams& s) {
  return {.temperature = s.has_temperature() ? s.temperature() : 1.0f,
          .top_k = s.top_k(),
          .top_p = s.has_top_p() ? s.top_p() : 1.0f,
          .seed = s.seed(),
          .num_top_logprobs = s.top_logprobs()};
}

void ToTokenLogprob(const runtime::SampledToken& token, xpd::v1::TokenLogprob* out) {
  out->set_token_id(token.token);
  out->set_logprob(token.logprob);
  for (const runtime::TokenLogprob& top : token.top_logprobs) {
    xpd::v1::TopLogprob* entry = out->add_top();
    entry->set_token_id(top.token);
    entry->set_logprob(top.logprob);
  }
}

}  // namespace xpd::rpc
