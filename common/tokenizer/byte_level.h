// GPT-2's byte-level alphabet: every byte maps to one printable code point,
// so a vocabulary of strings can hold arbitrary bytes. Bytes that are
// printable Latin-1 (! to ~, ¡ to ¬, ® to ÿ) map to themselves; the other 68
// map, in byte order, to U+0100 onwards (space is U+0120 'Ġ').
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace xpd::tokenizer {

// The alphabet code point of `byte`.
char32_t ByteToAlphabet(unsigned char byte);

// `bytes` written in the alphabet (UTF-8), as vocabulary strings are.
std::string ByteLevelEncode(std::string_view bytes);

// The bytes a vocabulary string stands for, or nullopt if it is not valid
// UTF-8 made only of alphabet characters (e.g. an added token's text).
std::optional<std::string> ByteLevelDecode(std::string_view token);

}  // namespace xpd::tokenizer
