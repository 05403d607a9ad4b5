#include "common/tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <utility>

#include "absl/strings/str_cat.h"

namespace xpd::tokenizer {
namespace {

// Oniguruma's `\s` (Unicode White_Space), as class items.
constexpr char kSpaceItems[] =
    "\\x{9}-\\x{D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";
// Oniguruma's `\w` for Unicode encodings: Letter, Mark, Decimal_Number,
// Connector_Punctuation.
constexpr char kWordItems[] = "\\p{L}\\p{M}\\p{Nd}\\p{Pc}";
constexpr char kHexItems[] = "0-9a-fA-F";

// Emits class `items` for a class escape; `negated` escapes are only
// expressible outside a class.
absl::Status AppendClassEscape(const char* items, bool negated, bool in_class, size_t offset,
                               std::string* out) {
  if (in_class) {
    if (negated) {
      return absl::InvalidArgumentError(absl::StrCat(
          "regex offset ", offset, ": a negated class escape inside [...] is not supported"));
    }
    out->append(items);
  } else {
    absl::StrAppend(out, negated ? "[^" : "[", items, "]");
  }
  return absl::OkStatus();
}

std::string CompileErrorText(int code) {
  PCRE2_UCHAR buffer[256];
  if (pcre2_get_error_message(code, buffer, sizeof(buffer)) < 0) return absl::StrCat(code);
  return reinterpret_cast<const char*>(buffer);
}

// Per-thread match state: a Regex is shared by every thread encoding with
// the tokenizer, so what pcre2_match writes to lives here. One ovector pair
// is enough: only the whole match is used (PCRE2 fills it even when the
// pattern has more groups).
class MatchScratch {
 public:
  MatchScratch()
      : data_(pcre2_match_data_create(1, nullptr)),
        context_(pcre2_match_context_create(nullptr)),
        // Long runs of one character class can need more than the default
        // 32 KiB JIT stack; grow on demand up to 16 MiB.
        jit_stack_(pcre2_jit_stack_create(32 * 1024, 16 * 1024 * 1024, nullptr)) {
    if (context_ != nullptr && jit_stack_ != nullptr) {
      pcre2_jit_stack_assign(context_, nullptr, jit_stack_);
    }
  }
  ~MatchScratch() {
    pcre2_jit_stack_free(jit_stack_);
    pcre2_match_context_free(context_);
    pcre2_match_data_free(data_);
  }
  pcre2_match_data* data() const { return data_; }
  pcre2_match_context* context() const { return context_; }

 private:
  pcre2_match_data* data_;
  pcre2_match_context* context_;
  pcre2_jit_stack* jit_stack_;
};

MatchScratch& Scratch() {
  thread_local MatchScratch scratch;
  return scratch;
}

}  // namespace

absl::StatusOr<std::string> TranslateOnigurumaPattern(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 64);
  bool in_class = false;
  const size_t n = pattern.size();
  size_t i = 0;
  while (i < n) {
    const char c = pattern[i];
    if (c == '\\') {
      if (i + 1 >= n) {
        return absl::InvalidArgumentError("regex ends with a lone backslash");
      }
      const char d = pattern[i + 1];
      absl::Status status;
      switch (d) {
        case 's':
        case 'S':
          status = AppendClassEscape(kSpaceItems, d == 'S', in_class, i, &out);
          break;
        case 'w':
        case 'W':
          status = AppendClassEscape(kWordItems, d == 'W', in_class, i, &out);
          break;
        case 'h':
        case 'H':
          status = AppendClassEscape(kHexItems, d == 'H', in_class, i, &out);
          break;
        case 'p':
        case 'P':
        case 'x':
        case 'o':
          // \p{...}, \x{...}, \o{...}: copied through the closing brace so
          // nothing inside is taken for an escape or a bracket.
          if (i + 2 < n && pattern[i + 2] == '{') {
            const size_t close = pattern.find('}', i + 3);
            if (close == std::string_view::npos) {
              return absl::InvalidArgumentError(
                  absl::StrCat("regex offset ", i, ": unterminated \\", std::string(1, d), "{"));
            }
            out.append(pattern.substr(i, close + 1 - i));
            i = close + 1;
            continue;
          }
          out.append(pattern.substr(i, 2));
          break;
        default:
          out.append(pattern.substr(i, 2));
          break;
      }
      if (!status.ok()) return status;
      i += 2;
      continue;
    }
    if (c == '[') {
      if (in_class) {
        if (i + 1 < n && pattern[i + 1] == ':') {  // POSIX class such as [:alpha:]
          const size_t close = pattern.find(":]", i + 2);
          if (close == std::string_view::npos) {
            return absl::InvalidArgumentError(
                absl::StrCat("regex offset ", i, ": unterminated POSIX class"));
          }
          out.append(pattern.substr(i, close + 2 - i));
          i = close + 2;
          continue;
        }
        return absl::InvalidArgumentError(absl::StrCat(
            "regex offset ", i, ": nested character classes (Oniguruma only) are not supported"));
      }
      in_class = true;
      out.push_back('[');
      ++i;
      if (i < n && pattern[i] == '^') {
        out.push_back('^');
        ++i;
      }
      if (i < n && pattern[i] == ']') {  // a leading ']' is literal
        out.append("\\]");
        ++i;
      }
      continue;
    }
    if (in_class && c == ']') {
      in_class = false;
    } else if (in_class && c == '&' && i + 1 < n && pattern[i + 1] == '&') {
      return absl::InvalidArgumentError(absl::StrCat(
          "regex offset ", i, ": class intersection '&&' (Oniguruma only) is not supported"));
    }
    out.push_back(c);
    ++i;
  }
  if (in_class) return absl::InvalidArgumentError("regex has an unterminated character class");
  return out;
}

absl::StatusOr<std::unique_ptr<Regex>> Regex::Compile(const std::string& pattern,
                                                      uint32_t options) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                    options | PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
  if (code == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("PCRE2 cannot compile the regex (at offset ",
                                                   error_offset, " of the PCRE2 pattern '", pattern,
                                                   "'): ", CompileErrorText(error_code)));
  }
  // JIT is an optimisation only: without it (unsupported platform) the
  // interpreter gives the same matches.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  return std::unique_ptr<Regex>(new Regex(code, pattern));
}

absl::StatusOr<std::unique_ptr<Regex>> Regex::FromOniguruma(std::string_view pattern) {
  absl::StatusOr<std::string> translated = TranslateOnigurumaPattern(pattern);
  if (!translated.ok()) return translated.status();
  return Compile(*translated, PCRE2_MULTILINE);
}

absl::StatusOr<std::unique_ptr<Regex>> Regex::FromLiteral(std::string_view text) {
  return Compile(std::string(text), PCRE2_LITERAL);
}

Regex::~Regex() { pcre2_code_free(code_); }

int Regex::Search(std::string_view subject, size_t start, size_t* begin, size_t* end) const {
  MatchScratch& scratch = Scratch();
  const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(),
                             start, PCRE2_NO_UTF_CHECK, scratch.data(), scratch.context());
  if (rc == PCRE2_ERROR_NOMATCH) return 0;
  if (rc < 0) return rc;
  const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(scratch.data());
  *begin = ovector[0];
  *end = ovector[1];
  return 1;
}

absl::Status Regex::MatchError(int code) {
  return absl::ResourceExhaustedError(absl::StrCat("regex match failed: ", CompileErrorText(code)));
}

}  // namespace xpd::tokenizer
