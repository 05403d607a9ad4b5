// Regexes of tokenizer.json, run on PCRE2 (UTF + UCP, JIT when available).
// Hugging Face tokenizers runs them on Oniguruma, whose syntax PCRE2 mostly
// shares; the differences that change results are translated:
//   - `\s` is Oniguruma's white space (Unicode White_Space: U+0009-U+000D,
//     U+0020, U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029, U+202F,
//     U+205F, U+3000). PCRE2's UCP `\s` lacks U+0085, so `\s`/`\S` become an
//     explicit class. `\w`/`\W` become Oniguruma's word class (L, M, Nd,
//     Pc), `\h`/`\H` its hex digits.
//   - `^` and `$` match at line boundaries in Oniguruma: PCRE2_MULTILINE.
// Constructs with no PCRE2 equivalent (nested classes, `&&` intersections,
// a negated class escape inside a class) are rejected, never guessed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

struct pcre2_real_code_8;

namespace xpd::tokenizer {

// The PCRE2 pattern equivalent to Oniguruma pattern `pattern`.
absl::StatusOr<std::string> TranslateOnigurumaPattern(std::string_view pattern);

class Regex {
 public:
  static absl::StatusOr<std::unique_ptr<Regex>> FromOniguruma(std::string_view pattern);
  static absl::StatusOr<std::unique_ptr<Regex>> FromLiteral(std::string_view text);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Finds the leftmost match at or after byte `start` of `subject`, which
  // must be valid UTF-8 with `start` on a character boundary (not checked
  // again: the tokenizer validates its input once). Returns 1 and sets
  // [*begin, *end) on a match, 0 when there is none, or a PCRE2 error code
  // (< 0; see MatchError) when a resource limit is hit.
  int Search(std::string_view subject, size_t start, size_t* begin, size_t* end) const;
  static absl::Status MatchError(int code);

  const std::string& pcre2_pattern() const { return pattern_; }

 private:
  Regex(pcre2_real_code_8* code, std::string pattern) : code_(code), pattern_(std::move(pattern)) {}
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(const std::string& pattern,
                                                        uint32_t options);

  pcre2_real_code_8* code_;
  std::string pattern_;
};

}  // namespace xpd::tokenizer
