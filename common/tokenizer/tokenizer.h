// A Hugging Face byte-level BPE tokenizer (tokenizer.json), exact for
// DeepSeek-V3's: added-token splitting, the regex pre-tokenizer sequence,
// byte-level mapping, rank-ordered BPE, and lossy UTF-8 decoding.
// Immutable after loading; safe to share between threads.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace xpd::tokenizer {

enum class SpecialTokenText : uint8_t {
  kRecognize,    // added-token text inside the input becomes that token (reference behaviour)
  kAsPlainText,  // added-token text is tokenized as ordinary text (no injection via user input)
};

struct EncodeOptions {
  SpecialTokenText special_tokens = SpecialTokenText::kRecognize;
};

class Tokenizer {
 public:
  // `path` is a tokenizer.json file, or a directory holding one.
  // Errors name the file and what is wrong ("tokenizer.json: model.merges[17]:
  // 'a b' refers to unknown token 'b'").
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& path);
  // The same from tokenizer.json's content; `name` prefixes error messages.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> LoadFromJson(std::string_view json,
                                                                 std::string_view name);
  virtual ~Tokenizer() = default;

  // Ids of `text` with no BOS added. Text that is not valid UTF-8 is
  // rejected with InvalidArgument naming the byte offset (the reference
  // takes only Unicode strings, so there is no behaviour to copy; guessing
  // a repair would give ids that decode to different text). Fails with
  // ResourceExhausted only if a pre-tokenizer regex hits a PCRE2 limit.
  virtual absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                                      const EncodeOptions& options = {}) const = 0;
  // Pre-tokenization pieces (added-token splitting + the Split steps), before
  // byte-level mapping; for tests and debugging.
  virtual absl::StatusOr<std::vector<std::string>> PreTokenize(std::string_view text) const = 0;

  // Lossy UTF-8 decoding: one U+FFFD per maximal invalid subpart; ids with no
  // token are dropped; with skip_special_tokens, added tokens marked special
  // are dropped.
  virtual std::string Decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const = 0;
  // The raw bytes of one token (byte-level decoded; added tokens' UTF-8
  // text), or nullopt for an id with no token. Used by streaming decoding.
  // With skip_special_tokens, a special token gives an empty string.
  virtual std::optional<std::string> TokenBytes(int32_t id, bool skip_special_tokens) const = 0;

  // Size of the id space: max token id + 1 (128815 for DeepSeek-V3).
  virtual int32_t id_space() const = 0;
  // Id of an added or vocabulary token's exact content, if any.
  virtual std::optional<int32_t> TokenId(std::string_view content) const = 0;
};

}  // namespace xpd::tokenizer
