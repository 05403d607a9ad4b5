#include "common/tokenizer/streaming_detokenizer.h"

#include "common/tokenizer/utf8.h"

namespace xpd::tokenizer {

StreamingDetokenizer::StreamingDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

std::string StreamingDetokenizer::Add(int32_t id) {
  std::optional<std::string> bytes = tokenizer_.TokenBytes(id, skip_special_tokens_);
  if (!bytes.has_value() || bytes->empty()) return std::string();
  pending_ += *bytes;
  std::string out;
  // Everything decodable now goes out, invalid bytes as U+FFFD at once; only
  // a tail that the next token could still complete waits.
  const size_t consumed = utf8::AppendLossy(pending_, /*hold_incomplete_tail=*/true, &out);
  pending_.erase(0, consumed);
  return out;
}

std::string StreamingDetokenizer::Flush() {
  std::string out = utf8::DecodeLossy(pending_);
  pending_.clear();
  return out;
}

}  // namespace xpd::tokenizer
