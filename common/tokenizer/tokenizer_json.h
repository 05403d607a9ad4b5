// Reads a Hugging Face tokenizer.json of the byte-level BPE family into the
// tokenizer's parts. Supported: normalizer none (or an empty Sequence);
// pre_tokenizer Split (Regex or String pattern, any behavior, invert) and
// ByteLevel, alone or in a Sequence, ending in ByteLevel; model BPE (vocab,
// merges as "a b" strings or [a, b] pairs, unk_token, fuse_unk,
// ignore_merges); decoder ByteLevel. Anything else is rejected with an error
// naming its JSON path rather than silently tokenizing differently. The
// post_processor, truncation and padding are not read: they only add
// special tokens or shape batches, and Encode adds nothing.
#pragma once

#include <memory>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tokenizer/added_tokens.h"
#include "common/tokenizer/bpe.h"
#include "common/tokenizer/pre_tokenizer.h"

namespace xpd::tokenizer {

struct TokenizerParts {
  std::vector<AddedToken> added_tokens;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<BpeModel> model;
};

// Ids must be below this: the decoder keeps a table over the id space, and
// real vocabularies are far smaller.
inline constexpr int32_t kMaxTokenId = 1 << 21;

// Errors are InvalidArgument and start with the JSON path
// ("model.merges[17]: ..."); the caller prefixes the file name.
absl::StatusOr<TokenizerParts> ParseTokenizerJson(std::string_view json);

}  // namespace xpd::tokenizer
