// Tokenizer::Load and the byte-level BPE tokenizer behind it: added-token
// splitting, then pre-tokenization and BPE for the text between added
// tokens; decoding through a flat id -> bytes table.
#include "common/tokenizer/tokenizer.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/tokenizer/byte_level.h"
#include "common/tokenizer/tokenizer_json.h"
#include "common/tokenizer/utf8.h"

namespace xpd::tokenizer {
namespace {

absl::Status CheckUtf8(std::string_view text) {
  if (std::optional<size_t> bad = utf8::FindInvalid(text)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "text is not valid UTF-8: byte 0x%02x at offset %d does not start or continue a valid "
        "sequence",
        static_cast<unsigned char>(text[*bad]), *bad));
  }
  return absl::OkStatus();
}

class BpeTokenizer final : public Tokenizer {
 public:
  explicit BpeTokenizer(TokenizerParts parts);

  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                              const EncodeOptions& options) const override;
  absl::StatusOr<std::vector<std::string>> PreTokenize(std::string_view text) const override;
  std::string Decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const override;
  std::optional<std::string> TokenBytes(int32_t id, bool skip_special_tokens) const override;
  int32_t id_space() const override { return static_cast<int32_t>(flags_.size()); }
  std::optional<int32_t> TokenId(std::string_view content) const override;

 private:
  enum Flags : uint8_t { kHasToken = 1, kSpecial = 2 };

  // Calls on_added(id) for each added token and on_text(piece) for each
  // stretch of text between them, in order.
  template <typename OnAdded, typename OnText>
  void SplitAdded(std::string_view text, const EncodeOptions& options, OnAdded&& on_added,
                  OnText&& on_text) const;
  // Appends the bytes `id` decodes to; false for an id with no token.
  bool AppendBytes(int32_t id, bool skip_special_tokens, std::string* out) const {
    if (id < 0 || id >= id_space() || !(flags_[id] & kHasToken)) return false;
    if (skip_special_tokens && (flags_[id] & kSpecial)) return true;
    out->append(bytes_, offsets_[id], offsets_[id + 1] - offsets_[id]);
    return true;
  }

  // Hugging Face matches non-normalized added tokens on the raw text first,
  // then normalized ones on what is left; with no normalizer the second
  // pass still only sees text the first pass left.
  AddedTokenMatcher raw_matcher_;
  AddedTokenMatcher normalized_matcher_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<BpeModel> model_;
  absl::flat_hash_map<std::string, int32_t> added_ids_;
  std::string bytes_;              // every token's decoded bytes, by id
  std::vector<uint32_t> offsets_;  // token id's bytes are [offsets_[id], offsets_[id + 1])
  std::vector<uint8_t> flags_;     // per id
};

BpeTokenizer::BpeTokenizer(TokenizerParts parts)
    : pre_tokenizer_(std::move(parts.pre_tokenizer)), model_(std::move(parts.model)) {
  std::vector<AddedToken> raw, normalized;
  for (const AddedToken& t : parts.added_tokens) {
    (t.normalized ? normalized : raw).push_back(t);
    added_ids_.insert_or_assign(t.content, t.id);
  }
  raw_matcher_ = AddedTokenMatcher(raw);
  normalized_matcher_ = AddedTokenMatcher(normalized);

  // The decoding table. The ByteLevel decoder maps every token, added ones
  // included, through the byte alphabet, and keeps a token's UTF-8 text
  // when it has a character outside the alphabet. Added tokens take
  // precedence over vocabulary entries with the same id.
  int32_t max_id = -1;
  for (const auto& [token, id] : model_->vocab()) max_id = std::max(max_id, id);
  for (const AddedToken& t : parts.added_tokens) max_id = std::max(max_id, t.id);
  std::vector<const std::string*> content(max_id + 1, nullptr);
  flags_.assign(max_id + 1, 0);
  for (const auto& [token, id] : model_->vocab()) content[id] = &token;
  for (const AddedToken& t : parts.added_tokens) {
    content[t.id] = &t.content;
    flags_[t.id] = t.special ? kSpecial : 0;
  }
  offsets_.assign(max_id + 2, 0);
  for (int32_t id = 0; id <= max_id; ++id) {
    offsets_[id] = static_cast<uint32_t>(bytes_.size());
    if (content[id] == nullptr) continue;
    flags_[id] |= kHasToken;
    if (std::optional<std::string> raw_bytes = ByteLevelDecode(*content[id])) {
      bytes_ += *raw_bytes;
    } else {
      bytes_ += *content[id];
    }
  }
  offsets_[max_id + 1] = static_cast<uint32_t>(bytes_.size());
}

template <typename OnAdded, typename OnText>
void BpeTokenizer::SplitAdded(std::string_view text, const EncodeOptions& options,
                              OnAdded&& on_added, OnText&& on_text) const {
  if (options.special_tokens == SpecialTokenText::kAsPlainText) {
    on_text(text);
    return;
  }
  raw_matcher_.Split(text, [&](std::string_view piece, int32_t id) {
    if (id >= 0) {
      on_added(id, piece);
      return;
    }
    normalized_matcher_.Split(piece, [&](std::string_view inner, int32_t inner_id) {
      if (inner_id >= 0) {
        on_added(inner_id, inner);
      } else {
        on_text(inner);
      }
    });
  });
}

absl::StatusOr<std::vector<int32_t>> BpeTokenizer::Encode(std::string_view text,
                                                          const EncodeOptions& options) const {
  if (absl::Status status = CheckUtf8(text); !status.ok()) return status;
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  absl::Status status = absl::OkStatus();
  SplitAdded(
      text, options, [&](int32_t id, std::string_view) { ids.push_back(id); },
      [&](std::string_view piece) {
        if (!status.ok()) return;
        status =
            pre_tokenizer_->Run(piece, [&](std::string_view p) { model_->EncodePiece(p, &ids); });
      });
  if (!status.ok()) return status;
  return ids;
}

absl::StatusOr<std::vector<std::string>> BpeTokenizer::PreTokenize(std::string_view text) const {
  if (absl::Status status = CheckUtf8(text); !status.ok()) return status;
  std::vector<std::string> pieces;
  absl::Status status = absl::OkStatus();
  SplitAdded(
      text, EncodeOptions{}, [&](int32_t, std::string_view piece) { pieces.emplace_back(piece); },
      [&](std::string_view piece) {
        if (!status.ok()) return;
        status = pre_tokenizer_->Run(piece, [&](std::string_view p) { pieces.emplace_back(p); });
      });
  if (!status.ok()) return status;
  return pieces;
}

std::string BpeTokenizer::Decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::string bytes;
  bytes.reserve(ids.size() * 4);
  for (int32_t id : ids) AppendBytes(id, skip_special_tokens, &bytes);
  return utf8::DecodeLossy(bytes);
}

std::optional<std::string> BpeTokenizer::TokenBytes(int32_t id, bool skip_special_tokens) const {
  std::string out;
  if (!AppendBytes(id, skip_special_tokens, &out)) return std::nullopt;
  return out;
}

std::optional<int32_t> BpeTokenizer::TokenId(std::string_view content) const {
  if (auto it = added_ids_.find(absl::string_view(content.data(), content.size()));
      it != added_ids_.end())
    return it->second;
  return model_->TokenId(content);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::LoadFromJson(std::string_view json,
                                                                   std::string_view name) {
  absl::StatusOr<TokenizerParts> parts = ParseTokenizerJson(json);
  if (!parts.ok()) {
    return absl::Status(parts.status().code(),
                        absl::StrCat(std::string(name), ": ", parts.status().message()));
  }
  return std::unique_ptr<Tokenizer>(new BpeTokenizer(*std::move(parts)));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& path) {
  std::error_code ec;
  const std::string file = std::filesystem::is_directory(path, ec)
                               ? (std::filesystem::path(path) / "tokenizer.json").string()
                               : path;
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(file, ": cannot open: ", std::strerror(errno)));
  }
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(file, ": read failed"));
  return LoadFromJson(contents.str(), file);
}

}  // namespace xpd::tokenizer
