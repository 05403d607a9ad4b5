// The byte-level BPE model: a piece's bytes start as single-byte tokens and
// the adjacent pair with the lowest merge rank is merged, leftmost first,
// until no pair has a merge (Hugging Face's BPE::merge_word). Pairs are
// looked up by token id in one hash map; short pieces (most words) merge in
// place over a small array, long ones through a priority queue, both giving
// the same result.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace xpd::tokenizer {

struct BpeSpec {
  std::vector<std::pair<std::string, int32_t>> vocab;       // token string (byte alphabet) -> id
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
  std::optional<std::string> unk_token;
  bool fuse_unk = false;
  bool ignore_merges = false;  // a piece that is a whole vocabulary token is not merged
};

class BpeModel {
 public:
  // Errors name the JSON path ("model.merges[17]: 'a b' refers to unknown
  // token 'b'"); duplicate merges keep the last rank, as Hugging Face does.
  static absl::StatusOr<std::unique_ptr<BpeModel>> Build(BpeSpec spec);

  // Appends the ids of one pre-tokenized piece (raw bytes). Bytes whose
  // alphabet character is not in the vocabulary become unk_token, or are
  // dropped when there is none (as in Hugging Face).
  void EncodePiece(std::string_view piece, std::vector<int32_t>* ids) const;

  std::optional<int32_t> TokenId(std::string_view token) const;
  const absl::flat_hash_map<std::string, int32_t>& vocab() const { return vocab_; }

 private:
  struct Merge {
    int32_t rank;
    int32_t id;
  };
  static constexpr int32_t kNoRank = INT32_MAX;

  Merge Lookup(int32_t left, int32_t right) const {
    auto it = merges_.find(static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32 |
                           static_cast<uint32_t>(right));
    return it == merges_.end() ? Merge{kNoRank, -1} : it->second;
  }
  // Merges `symbols` in place (ids); returns the new count.
  size_t MergeSmall(int32_t* symbols, size_t n) const;
  void MergeLarge(std::vector<int32_t>& symbols) const;

  absl::flat_hash_map<std::string, int32_t> vocab_;
  absl::flat_hash_map<uint64_t, Merge> merges_;  // (left id << 32 | right id)
  std::array<int32_t, 256> byte_ids_{};          // -1: byte not in the vocabulary
  int32_t unk_id_ = -1;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  // Raw bytes -> id of the pieces known to encode as one token (see Build).
  absl::flat_hash_map<std::string, int32_t> whole_pieces_;
};

}  // namespace xpd::tokenizer
