// UTF-8 validation and lossy decoding. Invalid input is replaced the way
// WHATWG's decoder and Rust's String::from_utf8_lossy do it: one U+FFFD per
// maximal invalid subpart (a lead byte followed by the longest run of bytes
// that could still start a valid sequence). Hugging Face tokenizers decode
// with from_utf8_lossy, so this is what makes decoded text match theirs.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace xpd::tokenizer::utf8 {

inline constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD

// Byte offset of the first byte that does not begin or continue a valid
// sequence (a truncated sequence at the end counts as invalid), or nullopt.
std::optional<size_t> FindInvalid(std::string_view bytes);

// Appends `bytes` to `out`, valid sequences as they are and each maximal
// invalid subpart as U+FFFD. With `hold_incomplete_tail`, a sequence at the
// end that is incomplete but could still become valid is not consumed.
// Returns the number of bytes consumed (bytes.size() unless held back).
size_t AppendLossy(std::string_view bytes, bool hold_incomplete_tail, std::string* out);

inline std::string DecodeLossy(std::string_view bytes) {
  std::string out;
  AppendLossy(bytes, /*hold_incomplete_tail=*/false, &out);
  return out;
}

// Length in bytes of the (valid) sequence whose lead byte is `lead`.
inline size_t SequenceLength(unsigned char lead) {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

// Code point of the valid sequence starting at s[i]; advances i past it.
char32_t DecodeValid(std::string_view s, size_t* i);
// Appends code point `cp` (<= U+10FFFF, not a surrogate) as UTF-8.
void AppendCodePoint(char32_t cp, std::string* out);

}  // namespace xpd::tokenizer::utf8
