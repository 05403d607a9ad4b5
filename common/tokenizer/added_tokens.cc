#include "common/tokenizer/added_tokens.h"

#include <algorithm>
#include <cstring>

#include "common/tokenizer/regex.h"
#include "common/tokenizer/utf8.h"

namespace xpd::tokenizer {
namespace {

// Unicode White_Space, what Rust's regex `\s` (used by Hugging Face for
// lstrip/rstrip) matches.
bool IsWhiteSpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// Rust regex `\w` (what single_word checks against): Alphabetic, Mark,
// Decimal_Number, Connector_Punctuation, Join_Control. `ch` is one character.
bool IsWordChar(std::string_view ch) {
  static const Regex* const kWord =
      Regex::FromOniguruma(R"([\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}])")->release();
  size_t begin, end;
  return kWord->Search(ch, 0, &begin, &end) == 1;
}

// The last character of non-empty `s`.
std::string_view LastChar(std::string_view s) {
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  return s.substr(i);
}

// The first character of non-empty `s`.
std::string_view FirstChar(std::string_view s) {
  return s.substr(0, utf8::SequenceLength(static_cast<unsigned char>(s[0])));
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(const std::vector<AddedToken>& tokens) {
  terminal_.push_back(-1);
  for (const AddedToken& token : tokens) {
    if (token.content.empty()) continue;
    const auto index = static_cast<int32_t>(tokens_.size());
    tokens_.push_back(token);
    uint32_t node = 0;
    for (unsigned char b : token.content) {
      auto [it, inserted] =
          edges_.try_emplace(uint64_t{node} << 8 | b, static_cast<uint32_t>(terminal_.size()));
      if (inserted) terminal_.push_back(-1);
      node = it->second;
    }
    // Two tokens with the same content: the first one listed wins.
    if (terminal_[node] < 0) terminal_[node] = index;
    first_byte_[static_cast<unsigned char>(token.content[0])] = true;
  }
  if (std::count(first_byte_.begin(), first_byte_.end(), true) == 1) {
    single_first_byte_ = static_cast<int>(std::find(first_byte_.begin(), first_byte_.end(), true) -
                                          first_byte_.begin());
  }
}

bool AddedTokenMatcher::FindNext(std::string_view text, size_t from, Match* match) const {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  for (size_t start = from; start < text.size(); ++start) {
    if (single_first_byte_ >= 0) {
      // Typical: every added token starts with '<'; memchr skips to it.
      const void* hit = std::memchr(p + start, single_first_byte_, text.size() - start);
      if (hit == nullptr) return false;
      start = static_cast<const unsigned char*>(hit) - p;
    } else if (!first_byte_[p[start]]) {
      continue;
    }
    uint32_t node = 0;
    int32_t best = -1;
    size_t best_end = 0;
    for (size_t i = start; i < text.size(); ++i) {
      auto it = edges_.find(uint64_t{node} << 8 | p[i]);
      if (it == edges_.end()) break;
      node = it->second;
      if (terminal_[node] >= 0) {
        best = terminal_[node];
        best_end = i + 1;
      }
    }
    if (best >= 0) {
      *match = {start, best_end, best};
      return true;
    }
  }
  return false;
}

void AddedTokenMatcher::Split(std::string_view text,
                              absl::FunctionRef<void(std::string_view, int32_t)> emit) const {
  size_t done = 0;  // end of the last piece emitted
  size_t from = 0;  // where the next search starts
  Match m;
  while (!tokens_.empty() && FindNext(text, from, &m)) {
    from = m.end;
    const AddedToken& token = tokens_[m.token];
    size_t begin = m.begin, end = m.end;
    if (token.single_word) {
      const bool word_before = begin > 0 && IsWordChar(LastChar(text.substr(0, begin)));
      const bool word_after = end < text.size() && IsWordChar(FirstChar(text.substr(end)));
      if (word_before || word_after) continue;
    }
    if (token.lstrip) {
      while (begin > done) {
        const std::string_view ch = LastChar(text.substr(0, begin));
        size_t i = 0;
        if (!IsWhiteSpace(utf8::DecodeValid(ch, &i))) break;
        begin -= ch.size();
      }
    }
    if (token.rstrip) {
      while (end < text.size()) {
        size_t next = end;
        if (!IsWhiteSpace(utf8::DecodeValid(text, &next))) break;
        end = next;
      }
      from = std::max(from, end);
    }
    if (done < begin) emit(text.substr(done, begin - done), -1);
    emit(text.substr(begin, end - begin), token.id);
    done = end;
  }
  if (done < text.size()) emit(text.substr(done), -1);
}

}  // namespace xpd::tokenizer
