// Conversions between the wire's sampling types (xpd.v1) and the runtime's,
// shared by every service so defaults are applied in one place: temperature
// and top_p default to 1 when absent, seed to 0.
#pragma once

#include "common/runtime/sampler.h"
#include "xpd/v1/generation.pb.h"

namespace xpd::rpc {

runtime::SamplingParams ToSamplingParams(const xpd::v1::SamplingParams& sampling);
void ToTokenLogprob(const runtime::SampledToken& token, xpd::v1::TokenLogprob* out);

}  // namespace xpd::rpc
