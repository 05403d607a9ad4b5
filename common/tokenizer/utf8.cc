#include "common/tokenizer/utf8.h"

#include <cstdint>
#include <cstring>

namespace xpd::tokenizer::utf8 {
namespace {

// Result of looking at the sequence that starts at one position.
struct Step {
  enum Kind : uint8_t { kValid, kInvalid, kIncomplete } kind;
  size_t length;  // bytes of the valid sequence, of the maximal invalid subpart, or of the tail
};

// The Unicode table of well-formed byte sequences (Table 3-7): the second
// byte's range depends on the lead byte, the others are 80..BF.
Step Classify(const unsigned char* p, size_t n) {
  const unsigned char lead = p[0];
  if (lead < 0x80) return {Step::kValid, 1};
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    need = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    need = 3;
    if (lead == 0xE0) lo = 0xA0;  // no overlong forms
    if (lead == 0xED) hi = 0x9F;  // no surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    need = 4;
    if (lead == 0xF0) lo = 0x90;  // no overlong forms
    if (lead == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return {Step::kInvalid, 1};  // 80..C1 and F5..FF never start a sequence
  }
  for (size_t k = 1; k < need; ++k) {
    if (k >= n) return {Step::kIncomplete, k};
    const unsigned char c = p[k];
    const bool ok = k == 1 ? (c >= lo && c <= hi) : (c >= 0x80 && c <= 0xBF);
    if (!ok) return {Step::kInvalid, k};
  }
  return {Step::kValid, need};
}

// Index of the first non-ASCII byte at or after i (n if none), eight bytes
// at a time: most text is mostly ASCII.
size_t SkipAscii(const unsigned char* p, size_t i, size_t n) {
  while (i + 8 <= n) {
    uint64_t word;
    std::memcpy(&word, p + i, 8);
    if (word & 0x8080808080808080ull) break;
    i += 8;
  }
  while (i < n && p[i] < 0x80) ++i;
  return i;
}

}  // namespace

std::optional<size_t> FindInvalid(std::string_view bytes) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  size_t i = 0;
  while (i < n) {
    if (p[i] < 0x80) {
      i = SkipAscii(p, i, n);
      continue;
    }
    const Step step = Classify(p + i, n - i);
    if (step.kind != Step::kValid) return i;
    i += step.length;
  }
  return std::nullopt;
}

size_t AppendLossy(std::string_view bytes, bool hold_incomplete_tail, std::string* out) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  size_t i = 0;
  size_t run_start = 0;  // start of valid bytes not yet copied
  while (i < n) {
    if (p[i] < 0x80) {
      i = SkipAscii(p, i, n);
      continue;
    }
    const Step step = Classify(p + i, n - i);
    if (step.kind == Step::kValid) {
      i += step.length;
      continue;
    }
    out->append(bytes.data() + run_start, i - run_start);
    if (step.kind == Step::kIncomplete && hold_incomplete_tail) return i;
    out->append(kReplacement);
    i += step.length;
    run_start = i;
  }
  out->append(bytes.data() + run_start, n - run_start);
  return n;
}

char32_t DecodeValid(std::string_view s, size_t* i) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data()) + *i;
  const size_t len = SequenceLength(p[0]);
  char32_t cp;
  switch (len) {
    case 1:
      cp = p[0];
      break;
    case 2:
      cp = (char32_t{p[0]} & 0x1F) << 6 | (p[1] & 0x3F);
      break;
    case 3:
      cp = (char32_t{p[0]} & 0x0F) << 12 | (char32_t{p[1]} & 0x3F) << 6 | (p[2] & 0x3F);
      break;
    default:
      cp = (char32_t{p[0]} & 0x07) << 18 | (char32_t{p[1]} & 0x3F) << 12 |
           (char32_t{p[2]} & 0x3F) << 6 | (p[3] & 0x3F);
      break;
  }
  *i += len;
  return cp;
}

void AppendCodePoint(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace xpd::tokenizer::utf8
