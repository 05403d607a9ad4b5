#include "common/tokenizer/bpe.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/tokenizer/byte_level.h"

namespace xpd::tokenizer {
namespace {

// Pieces with at most this many bytes merge over a stack array: scanning a
// few ranks beats heap bookkeeping, and the worst case stays small.
constexpr size_t kSmallPiece = 48;

absl::Status MergeError(size_t index, const std::string& left, const std::string& right,
                        const std::string& what) {
  return absl::InvalidArgumentError(
      absl::StrCat("model.merges[", index, "]: '", left, " ", right, "' ", what));
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::Build(BpeSpec spec) {
  auto model = std::unique_ptr<BpeModel>(new BpeModel());
  model->vocab_.reserve(spec.vocab.size());
  for (auto& [token, id] : spec.vocab) model->vocab_.emplace(std::move(token), id);

  model->merges_.reserve(spec.merges.size());
  for (size_t i = 0; i < spec.merges.size(); ++i) {
    const auto& [left, right] = spec.merges[i];
    auto l = model->vocab_.find(left);
    if (l == model->vocab_.end()) {
      return MergeError(i, left, right, absl::StrCat("refers to unknown token '", left, "'"));
    }
    auto r = model->vocab_.find(right);
    if (r == model->vocab_.end()) {
      return MergeError(i, left, right, absl::StrCat("refers to unknown token '", right, "'"));
    }
    const std::string merged = left + right;
    auto m = model->vocab_.find(merged);
    if (m == model->vocab_.end()) {
      return MergeError(i, left, right,
                        absl::StrCat("makes '", merged, "', which is not in model.vocab"));
    }
    const uint64_t key = static_cast<uint64_t>(static_cast<uint32_t>(l->second)) << 32 |
                         static_cast<uint32_t>(r->second);
    model->merges_.insert_or_assign(key, Merge{static_cast<int32_t>(i), m->second});
  }

  for (int b = 0; b < 256; ++b) {
    const std::string token = ByteLevelEncode(std::string(1, static_cast<char>(b)));
    auto it = model->vocab_.find(token);
    model->byte_ids_[b] = it == model->vocab_.end() ? -1 : it->second;
  }
  if (spec.unk_token.has_value()) {
    auto it = model->vocab_.find(*spec.unk_token);
    if (it == model->vocab_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.unk_token: '", *spec.unk_token, "' is not in model.vocab"));
    }
    model->unk_id_ = it->second;
  }
  model->fuse_unk_ = spec.fuse_unk;
  model->ignore_merges_ = spec.ignore_merges;
  // Whole-piece shortcut. Merging a piece depends only on its bytes, so a
  // vocabulary token whose own bytes merge back to exactly that token will
  // be the answer for every piece with those bytes: looking the piece up
  // replaces merging it (most words are one token). With ignore_merges
  // every vocabulary token is taken as is, which is what that flag means.
  std::vector<int32_t> ids;
  for (const auto& [token, id] : model->vocab_) {
    std::optional<std::string> raw = ByteLevelDecode(token);
    if (!raw.has_value() || raw->empty()) continue;
    if (!spec.ignore_merges) {
      ids.clear();
      model->EncodePiece(*raw, &ids);
      if (ids.size() != 1 || ids[0] != id) continue;
    }
    model->whole_pieces_.emplace(*std::move(raw), id);
  }
  return model;
}

std::optional<int32_t> BpeModel::TokenId(std::string_view token) const {
  auto it = vocab_.find(absl::string_view(token.data(), token.size()));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

void BpeModel::EncodePiece(std::string_view piece, std::vector<int32_t>* ids) const {
  if (auto it = whole_pieces_.find(absl::string_view(piece.data(), piece.size()));
      it != whole_pieces_.end()) {
    ids->push_back(it->second);
    return;
  }
  int32_t small[kSmallPiece];
  std::vector<int32_t> large;
  int32_t* symbols = small;
  if (piece.size() > kSmallPiece) {
    large.resize(piece.size());
    symbols = large.data();
  }
  size_t n = 0;
  for (unsigned char b : piece) {
    const int32_t id = byte_ids_[b];
    if (id >= 0) {
      symbols[n++] = id;
    } else if (unk_id_ >= 0 && !(fuse_unk_ && n > 0 && symbols[n - 1] == unk_id_)) {
      symbols[n++] = unk_id_;
    }
  }
  if (n <= kSmallPiece) {
    n = MergeSmall(symbols, n);
    ids->insert(ids->end(), symbols, symbols + n);
    return;
  }
  large.resize(n);
  MergeLarge(large);
  ids->insert(ids->end(), large.begin(), large.end());
}

size_t BpeModel::MergeSmall(int32_t* symbols, size_t n) const {
  if (n < 2) return n;
  // merges[i] is the merge of (symbols[i], symbols[i + 1]).
  Merge merges[kSmallPiece];
  for (size_t i = 0; i + 1 < n; ++i) merges[i] = Lookup(symbols[i], symbols[i + 1]);
  while (n > 1) {
    size_t best = 0;
    for (size_t i = 1; i + 1 < n; ++i) {
      if (merges[i].rank < merges[best].rank) best = i;
    }
    if (merges[best].rank == kNoRank) break;
    symbols[best] = merges[best].id;
    // Drop symbols[best + 1] and the pair that started there.
    std::memmove(symbols + best + 1, symbols + best + 2, (n - best - 2) * sizeof(int32_t));
    if (best + 2 < n) {
      std::memmove(merges + best + 1, merges + best + 2, (n - best - 3) * sizeof(Merge));
    }
    --n;
    if (best + 1 < n) merges[best] = Lookup(symbols[best], symbols[best + 1]);
    if (best > 0) merges[best - 1] = Lookup(symbols[best - 1], symbols[best]);
  }
  return n;
}

void BpeModel::MergeLarge(std::vector<int32_t>& symbols) const {
  // The lowest (rank, position) pair comes from a min segment tree over the
  // pairs' keys (rank << 32 | left position): O(log n) per merge with no
  // stale entries, where a heap would collect them on repetitive input.
  struct Scratch {
    std::vector<int32_t> next, prev, merged_id;
    std::vector<uint64_t> tree;
  };
  thread_local Scratch scratch;
  constexpr uint64_t kNone = UINT64_MAX;
  const int32_t n = static_cast<int32_t>(symbols.size());
  size_t leaves = 1;
  while (leaves < symbols.size()) leaves <<= 1;
  std::vector<int32_t>& next = scratch.next;
  std::vector<int32_t>& prev = scratch.prev;
  std::vector<int32_t>& merged_id = scratch.merged_id;
  std::vector<uint64_t>& tree = scratch.tree;
  next.resize(n);
  prev.resize(n);
  merged_id.resize(n);
  tree.assign(2 * leaves, kNone);
  auto pair_key = [&](int32_t pos) {
    const Merge m = Lookup(symbols[pos], symbols[next[pos]]);
    merged_id[pos] = m.id;
    return m.rank == kNoRank ? kNone
                             : static_cast<uint64_t>(m.rank) << 32 | static_cast<uint32_t>(pos);
  };
  auto update = [&](int32_t pos, uint64_t key) {
    size_t i = leaves + pos;
    tree[i] = key;
    // Ancestors above a node whose minimum did not change stay as they are.
    for (i >>= 1; i >= 1; i >>= 1) {
      const uint64_t m = std::min(tree[2 * i], tree[2 * i + 1]);
      if (tree[i] == m) break;
      tree[i] = m;
    }
  };
  for (int32_t i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  for (int32_t i = 0; i + 1 < n; ++i) tree[leaves + i] = pair_key(i);
  for (size_t i = leaves - 1; i >= 1; --i) tree[i] = std::min(tree[2 * i], tree[2 * i + 1]);
  while (tree[1] != kNone) {
    const auto pos = static_cast<int32_t>(tree[1] & 0xFFFFFFFFu);
    const int32_t right = next[pos];
    symbols[pos] = merged_id[pos];
    next[pos] = next[right];
    if (next[right] >= 0) prev[next[right]] = pos;
    update(right, kNone);
    update(pos, next[pos] >= 0 ? pair_key(pos) : kNone);
    if (prev[pos] >= 0) update(prev[pos], pair_key(prev[pos]));
  }
  size_t out = 0;
  for (int32_t i = 0; i >= 0; i = next[i]) symbols[out++] = symbols[i];
  symbols.resize(out);
}

}  // namespace xpd::tokenizer
