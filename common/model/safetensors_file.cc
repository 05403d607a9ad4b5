#include "common/model/safetensors_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <optional>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace xpd::model {
namespace {

using kernels::DType;

// Real headers are at most a few MB (the 671B checkpoint's largest shard
// header is ~100 KB); the cap keeps a corrupt length from parsing garbage.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

struct DTypeInfo {
  std::optional<DType> dtype;  // nullopt: valid safetensors dtype xpd does not compute with
  int size = 0;
};

std::optional<DTypeInfo> LookupDType(std::string_view name) {
  if (name == "F32") return DTypeInfo{DType::kF32, 4};
  if (name == "BF16") return DTypeInfo{DType::kBF16, 2};
  if (name == "F8_E4M3") return DTypeInfo{DType::kF8E4M3, 1};
  if (name == "BOOL" || name == "U8" || name == "I8" || name == "F8_E5M2" || name == "F8_E8M0") {
    return DTypeInfo{std::nullopt, 1};
  }
  if (name == "F16" || name == "I16" || name == "U16") return DTypeInfo{std::nullopt, 2};
  if (name == "I32" || name == "U32") return DTypeInfo{std::nullopt, 4};
  if (name == "F64" || name == "I64" || name == "U64") return DTypeInfo{std::nullopt, 8};
  return std::nullopt;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

struct Entry {
  std::string name;
  std::string dtype_name;
  DTypeInfo info;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

// Validates one header entry against the data section size. `error` prefixes
// messages with "<path>: tensor '<name>': ".
absl::StatusOr<Entry> ParseEntry(const std::string& name, const nlohmann::json& value,
                                 uint64_t data_size, const std::string& where) {
  auto error = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": tensor '", name, "': ", what));
  };
  if (!value.is_object()) return error("header entry is not an object");
  Entry entry;
  entry.name = name;
  auto dtype = value.find("dtype");
  if (dtype == value.end() || !dtype->is_string()) return error("missing string 'dtype'");
  entry.dtype_name = dtype->get<std::string>();
  std::optional<DTypeInfo> info = LookupDType(entry.dtype_name);
  if (!info) return error(absl::StrCat("unknown dtype '", entry.dtype_name, "'"));
  entry.info = *info;

  auto shape = value.find("shape");
  if (shape == value.end() || !shape->is_array()) return error("missing array 'shape'");
  uint64_t elements = 1;
  for (const nlohmann::json& dim : *shape) {
    if (!dim.is_number_unsigned()) return error(absl::StrCat("bad shape ", shape->dump()));
    const uint64_t d = dim.get<uint64_t>();
    if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        (d != 0 && elements > (std::numeric_limits<uint64_t>::max() / 8) / d)) {
      return error(absl::StrCat("shape ", shape->dump(), " is too large"));
    }
    elements *= d;
    entry.shape.push_back(static_cast<int64_t>(d));
  }

  auto offsets = value.find("data_offsets");
  if (offsets == value.end() || !offsets->is_array() || offsets->size() != 2 ||
      !(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned()) {
    return error("missing or malformed 'data_offsets' (want [begin, end])");
  }
  entry.begin = (*offsets)[0].get<uint64_t>();
  entry.end = (*offsets)[1].get<uint64_t>();
  if (entry.begin > entry.end || entry.end > data_size) {
    return error(absl::StrCat("data_offsets [", entry.begin, ", ", entry.end,
                              "] out of range of the ", data_size, "-byte data section"));
  }
  const uint64_t expected = elements * static_cast<uint64_t>(entry.info.size);
  if (entry.end - entry.begin != expected) {
    return error(absl::StrCat("data_offsets [", entry.begin, ", ", entry.end, "] span ",
                              entry.end - entry.begin, " bytes but shape ",
                              ShapeString(entry.shape), " of ", entry.dtype_name, " needs ",
                              expected));
  }
  return entry;
}

}  // namespace

int64_t TensorView::num_elements() const {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  return count;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  auto error = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    const std::string what = absl::StrCat("cannot open: ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(absl::StrCat(path, ": ", what)) : error(what);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return error("not a regular file");
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    return error(
        absl::StrCat("truncated: ", file_size, " bytes, too short for the 8-byte header length"));
  }
  // Private read-only mapping: pages come from the page cache on first touch
  // and the file can never be modified through it.
  void* mapping = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);  // the mapping keeps the file alive
  if (mapping == MAP_FAILED) return error(absl::StrCat("mmap failed: ", std::strerror(errno)));

  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->mapping_ = mapping;
  file->mapping_size_ = file_size;
  const auto* bytes = static_cast<const std::byte*>(mapping);

  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(bytes[i]);
  if (header_len < 2) return error(absl::StrCat("header length ", header_len, " is too small"));
  if (header_len > file_size - 8) {
    return error(absl::StrCat("truncated: header length ", header_len, " exceeds the ",
                              file_size - 8, " bytes after the length field"));
  }
  if (header_len > kMaxHeaderBytes) {
    return error(absl::StrCat("header length ", header_len, " exceeds the 100 MB limit"));
  }
  const auto* header_begin = reinterpret_cast<const char*>(bytes + 8);
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(header_begin, header_begin + header_len);
  } catch (const nlohmann::json::exception& e) {
    return error(absl::StrCat("bad header JSON: ", e.what()));
  }
  if (!header.is_object()) {
    return error(absl::StrCat("header is not a JSON object (got ", header.type_name(), ")"));
  }

  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = file_size - data_start;
  std::vector<Entry> entries;
  entries.reserve(header.size());
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") continue;  // free-form string map
    absl::StatusOr<Entry> entry = ParseEntry(name, value, data_size, path);
    if (!entry.ok()) return entry.status();
    entries.push_back(*std::move(entry));
  }
  // Overlapping tensors would alias each other's bytes; a writer never does that.
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < entries.size(); ++i) {
    if (entries[i].begin < entries[i - 1].end) {
      return error(absl::StrCat("tensor '", entries[i].name, "': data_offsets [", entries[i].begin,
                                ", ", entries[i].end, "] overlap tensor '", entries[i - 1].name,
                                "' [", entries[i - 1].begin, ", ", entries[i - 1].end, "]"));
    }
  }
  for (Entry& entry : entries) {
    if (!entry.info.dtype) {
      file->unsupported_[entry.name] = entry.dtype_name;
      continue;
    }
    TensorView view;
    view.name = entry.name;
    view.file = path;
    view.dtype = *entry.info.dtype;
    view.shape = std::move(entry.shape);
    view.data = bytes + data_start + entry.begin;
    view.size_bytes = entry.end - entry.begin;
    file->tensors_.emplace(entry.name, std::move(view));
  }
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
}

const TensorView* SafetensorsFile::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

absl::StatusOr<const TensorView*> SafetensorsFile::Get(const std::string& name) const {
  if (const TensorView* view = Find(name)) return view;
  if (auto it = unsupported_.find(name); it != unsupported_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": tensor '", name, "': dtype ", it->second,
                     " is not supported (xpd computes with F32, BF16 and F8_E4M3)"));
  }
  return absl::NotFoundError(absl::StrCat(path_, ": tensor '", name, "': not in file"));
}

std::vector<std::string> SafetensorsFile::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size() + unsupported_.size());
  for (const auto& [name, view] : tensors_) names.push_back(name);
  for (const auto& [name, dtype] : unsupported_) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace xpd::model
