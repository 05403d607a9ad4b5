// The pre-tokenizer: a sequence of steps, each applied separately to every
// piece the step before it produced, so no piece ever crosses a boundary an
// earlier step made (Hugging Face's pre_tokenizers.Sequence).
//   Split:     regex (or literal) matches cut a piece; `behavior` says what
//              happens to matches and the text between them.
//   ByteLevel: optional prefix space and GPT-2 regex split; the byte-to-
//              alphabet mapping itself is left to the BPE model, which works
//              on bytes directly.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "common/tokenizer/regex.h"

namespace xpd::tokenizer {

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

class PreTokenizer {
 public:
  void AddSplit(std::unique_ptr<Regex> regex, SplitBehavior behavior, bool invert);
  // use_regex: split with GPT-2's regex first (as ByteLevel(use_regex=true) does).
  absl::Status AddByteLevel(bool add_prefix_space, bool use_regex);

  // Calls `emit` with each non-empty piece of `text` (valid UTF-8), in order.
  // Pieces point into `text` or, after a prefix space was added, into a
  // buffer that lives until `emit` returns. Fails only when a regex hits a
  // PCRE2 resource limit.
  absl::Status Run(std::string_view text, absl::FunctionRef<void(std::string_view)> emit) const;

 private:
  struct Step {
    std::unique_ptr<Regex> regex;  // null for a ByteLevel step without use_regex
    SplitBehavior behavior = SplitBehavior::kIsolated;
    bool invert = false;
    bool add_prefix_space = false;  // ByteLevel only
  };
  absl::Status RunFrom(size_t step, std::string_view piece,
                       absl::FunctionRef<void(std::string_view)> emit) const;
  absl::Status SplitPiece(const Step& step, size_t next, std::string_view piece,
                          absl::FunctionRef<void(std::string_view)> emit) const;

  std::vector<Step> steps_;
};

}  // namespace xpd::tokenizer
