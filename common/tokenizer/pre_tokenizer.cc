#include "common/tokenizer/pre_tokenizer.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/tokenizer/utf8.h"

namespace xpd::tokenizer {
namespace {

// GPT-2's pre-tokenizer regex, as Hugging Face's ByteLevel(use_regex=true)
// writes it.
constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct Segment {
  size_t begin, end;
  bool flag;  // is_match on input; "remove" after the behavior is applied
};

// Matches the way the onig crate's find_iter (used by Hugging Face) reports
// them: an empty match right where the previous match ended is skipped by
// moving one character on. Calls on_match(begin, end) for each match.
template <typename OnMatch>
absl::Status ForEachMatch(const Regex& regex, std::string_view s, OnMatch&& on_match) {
  size_t search_from = 0;
  bool have_last = false;
  size_t last_match_end = 0;
  while (search_from <= s.size()) {
    size_t begin = 0, end = 0;
    const int rc = regex.Search(s, search_from, &begin, &end);
    if (rc == 0) break;
    if (rc < 0) return Regex::MatchError(rc);
    if (begin < search_from || end < begin || end > s.size()) {
      return absl::InternalError(
          absl::StrCat("regex '", regex.pcre2_pattern(), "' reported an out-of-order match"));
    }
    if (begin == end && have_last && last_match_end == end) {
      if (search_from >= s.size()) break;
      search_from += utf8::SequenceLength(static_cast<unsigned char>(s[search_from]));
      continue;
    }
    search_from = end;
    have_last = true;
    last_match_end = end;
    on_match(begin, end);
  }
  return absl::OkStatus();
}

// Hugging Face's NormalizedString::split: turns (range, is_match) segments
// into (range, remove) segments.
std::vector<Segment> ApplyBehavior(std::vector<Segment> matches, SplitBehavior behavior) {
  std::vector<Segment> out;
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (Segment& s : matches) s.flag = false;
      return matches;
    case SplitBehavior::kRemoved:
      return matches;
    case SplitBehavior::kContiguous:
      for (const Segment& s : matches) {
        if (s.flag == previous_match && !out.empty()) {
          out.back().end = s.end;
        } else {
          out.push_back({s.begin, s.end, false});
        }
        previous_match = s.flag;
      }
      return out;
    case SplitBehavior::kMergedWithPrevious:
      for (const Segment& s : matches) {
        if (s.flag && !previous_match && !out.empty()) {
          out.back().end = s.end;
        } else {
          out.push_back({s.begin, s.end, false});
        }
        previous_match = s.flag;
      }
      return out;
    case SplitBehavior::kMergedWithNext:
      for (auto it = matches.rbegin(); it != matches.rend(); ++it) {
        if (it->flag && !previous_match && !out.empty()) {
          out.back().begin = it->begin;
        } else {
          out.push_back({it->begin, it->end, false});
        }
        previous_match = it->flag;
      }
      return std::vector<Segment>(out.rbegin(), out.rend());
  }
  return out;
}

}  // namespace

void PreTokenizer::AddSplit(std::unique_ptr<Regex> regex, SplitBehavior behavior, bool invert) {
  steps_.push_back(Step{std::move(regex), behavior, invert, false});
}

absl::Status PreTokenizer::AddByteLevel(bool add_prefix_space, bool use_regex) {
  Step step;
  step.add_prefix_space = add_prefix_space;
  if (use_regex) {
    absl::StatusOr<std::unique_ptr<Regex>> regex = Regex::FromOniguruma(kGpt2Pattern);
    if (!regex.ok()) return regex.status();
    step.regex = *std::move(regex);
  }
  steps_.push_back(std::move(step));
  return absl::OkStatus();
}

absl::Status PreTokenizer::Run(std::string_view text,
                               absl::FunctionRef<void(std::string_view)> emit) const {
  if (text.empty()) return absl::OkStatus();
  return RunFrom(0, text, emit);
}

absl::Status PreTokenizer::RunFrom(size_t step, std::string_view piece,
                                   absl::FunctionRef<void(std::string_view)> emit) const {
  if (step == steps_.size()) {
    emit(piece);
    return absl::OkStatus();
  }
  const Step& s = steps_[step];
  if (s.add_prefix_space && piece.front() != ' ') {
    std::string spaced;
    spaced.reserve(piece.size() + 1);
    spaced.push_back(' ');
    spaced.append(piece);
    if (s.regex == nullptr) return RunFrom(step + 1, spaced, emit);
    return SplitPiece(s, step + 1, spaced, emit);
  }
  if (s.regex == nullptr) return RunFrom(step + 1, piece, emit);
  return SplitPiece(s, step + 1, piece, emit);
}

absl::Status PreTokenizer::SplitPiece(const Step& step, size_t next, std::string_view piece,
                                      absl::FunctionRef<void(std::string_view)> emit) const {
  absl::Status inner = absl::OkStatus();
  auto descend = [&](size_t begin, size_t end) {
    if (begin < end && inner.ok()) inner = RunFrom(next, piece.substr(begin, end - begin), emit);
  };
  if (step.behavior == SplitBehavior::kIsolated) {
    // The common case, streamed: every match and every gap is a piece.
    size_t previous = 0;
    absl::Status status = ForEachMatch(*step.regex, piece, [&](size_t begin, size_t end) {
      descend(previous, begin);
      descend(begin, end);
      previous = end;
    });
    if (!status.ok()) return status;
    descend(previous, piece.size());
    return inner;
  }
  std::vector<Segment> segments;
  size_t previous = 0;
  absl::Status status = ForEachMatch(*step.regex, piece, [&](size_t begin, size_t end) {
    if (previous != begin) segments.push_back({previous, begin, false});
    segments.push_back({begin, end, true});
    previous = end;
  });
  if (!status.ok()) return status;
  if (previous != piece.size()) segments.push_back({previous, piece.size(), false});
  if (step.invert) {
    for (Segment& s : segments) s.flag = !s.flag;
  }
  for (const Segment& s : ApplyBehavior(std::move(segments), step.behavior)) {
    if (!s.flag) descend(s.begin, s.end);
  }
  return inner;
}

}  // namespace xpd::tokenizer
