#include "common/tokenizer/byte_level.h"

#include <array>
#include <cstdint>

#include "common/tokenizer/utf8.h"

namespace xpd::tokenizer {
namespace {

bool MapsToItself(int b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

struct Tables {
  std::array<char32_t, 256> to_alphabet;
  std::array<int16_t, 512> from_alphabet;  // every alphabet code point is < U+0144
};

const Tables& GetTables() {
  static const Tables tables = [] {
    Tables t;
    t.from_alphabet.fill(-1);
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      t.to_alphabet[b] = MapsToItself(b) ? static_cast<char32_t>(b) : next++;
      t.from_alphabet[t.to_alphabet[b]] = static_cast<int16_t>(b);
    }
    return t;
  }();
  return tables;
}

}  // namespace

char32_t ByteToAlphabet(unsigned char byte) { return GetTables().to_alphabet[byte]; }

std::string ByteLevelEncode(std::string_view bytes) {
  const Tables& t = GetTables();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) utf8::AppendCodePoint(t.to_alphabet[b], &out);
  return out;
}

std::optional<std::string> ByteLevelDecode(std::string_view token) {
  if (utf8::FindInvalid(token).has_value()) return std::nullopt;
  const Tables& t = GetTables();
  std::string out;
  out.reserve(token.size());
  size_t i = 0;
  while (i < token.size()) {
    const char32_t cp = utf8::DecodeValid(token, &i);
    if (cp >= t.from_alphabet.size() || t.from_alphabet[cp] < 0) return std::nullopt;
    out.push_back(static_cast<char>(t.from_alphabet[cp]));
  }
  return out;
}

}  // namespace xpd::tokenizer
