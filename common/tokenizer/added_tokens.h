// Added tokens (special or not) are cut out of the text before
// pre-tokenization, matching leftmost-longest as Hugging Face's
// Aho-Corasick matcher does: the earliest start wins, then the longest
// token starting there. lstrip / rstrip / single_word follow Hugging Face's
// AddedVocabulary::find_matches.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"

namespace xpd::tokenizer {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  bool normalized = true;  // Hugging Face's default when the field is absent
};

class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  // Tokens with empty content are ignored (Hugging Face skips them too).
  explicit AddedTokenMatcher(const std::vector<AddedToken>& tokens);

  bool empty() const { return tokens_.empty(); }
  // Splits `text` (valid UTF-8) into added tokens and the text between
  // them: emit(piece, id) with id -1 for text, in order; no empty text.
  void Split(std::string_view text, absl::FunctionRef<void(std::string_view, int32_t)> emit) const;

 private:
  struct Match {
    size_t begin, end;
    int32_t token;  // index into tokens_
  };
  // Leftmost-longest match starting at or after `from`, if any.
  bool FindNext(std::string_view text, size_t from, Match* match) const;

  std::vector<AddedToken> tokens_;
  // Byte trie: key (node << 8 | byte) -> child node; node 0 is the root.
  absl::flat_hash_map<uint64_t, uint32_t> edges_;
  std::vector<int32_t> terminal_;  // per node: token index ending there, or -1
  std::array<bool, 256> first_byte_{};
  int single_first_byte_ = -1;  // the only first byte there is, if just one
};

}  // namespace xpd::tokenizer
