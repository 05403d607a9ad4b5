// Incremental detokenization for streamed generation: feed ids one at a
// time and get the text that is safe to show now. An incomplete but still
// valid UTF-8 sequence at the end is held back; invalid bytes are emitted at
// once as U+FFFD; Flush() emits what is held back, decoded lossily.
#pragma once

#include <cstdint>
#include <string>

#include "common/tokenizer/tokenizer.h"

namespace xpd::tokenizer {

class StreamingDetokenizer {
 public:
  StreamingDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens);
  std::string Add(int32_t id);  // text to emit after this id (may be empty)
  std::string Flush();          // at the end of the stream

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  std::string pending_;  // bytes of an incomplete UTF-8 sequence
};

}  // namespace xpd::tokenizer
