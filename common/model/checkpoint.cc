#include "common/model/checkpoint.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace xpd::model {
namespace {

constexpr char kConfigName[] = "config.json";
constexpr char kSingleName[] = "model.safetensors";
constexpr char kIndexName[] = "model.safetensors.index.json";

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string ShapeString(std::span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::string DTypeList(std::span<const kernels::DType> dtypes) {
  return absl::StrJoin(dtypes, ", ", [](std::string* out, kernels::DType dtype) {
    absl::StrAppend(out, std::string(kernels::DTypeName(dtype)));
  });
}

// Shard names come from a file we do not control; keep them inside the
// checkpoint directory.
bool IsSafeRelativePath(const std::string& name) {
  if (name.empty() || name.front() == '/') return false;
  size_t start = 0;
  while (start <= name.size()) {
    size_t slash = name.find('/', start);
    if (slash == std::string::npos) slash = name.size();
    const std::string_view part(name.data() + start, slash - start);
    if (part.empty() || part == "." || part == "..") return false;
    start = slash + 1;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir_in) {
  std::string dir = dir_in;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) {
    return absl::NotFoundError(
        absl::StrCat(dir, ": cannot open checkpoint directory: ", std::strerror(errno)));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(dir, ": not a directory"));
  }
  const std::string config_path = absl::StrCat(dir, "/", kConfigName);
  if (!IsRegularFile(config_path)) {
    return absl::NotFoundError(
        absl::StrCat(dir, ": no ", kConfigName, " (not a Hugging Face checkpoint directory?)"));
  }
  std::unique_ptr<Checkpoint> ckpt(new Checkpoint());
  ckpt->dir_ = dir;
  absl::StatusOr<ModelConfig> config = LoadModelConfig(config_path);
  if (!config.ok()) return config.status();
  ckpt->config_ = *std::move(config);

  // Same precedence as Hugging Face: a single model.safetensors wins.
  if (IsRegularFile(absl::StrCat(dir, "/", kSingleName))) {
    absl::StatusOr<const SafetensorsFile*> file = ckpt->OpenFile(kSingleName);
    if (!file.ok()) return file.status();
    for (const std::string& name : (*file)->TensorNames()) {
      ckpt->tensor_to_file_[name] = kSingleName;
    }
    return ckpt;
  }
  const std::string index_path = absl::StrCat(dir, "/", kIndexName);
  if (!IsRegularFile(index_path)) {
    return absl::NotFoundError(
        absl::StrCat(dir, ": no weights (neither ", kSingleName, " nor ", kIndexName, ")"));
  }
  std::ifstream in(index_path, std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in || in.bad()) return absl::DataLossError(absl::StrCat(index_path, ": read failed"));
  nlohmann::json index;
  try {
    index = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": invalid JSON: ", e.what()));
  }
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_path, ": expected an object with a 'weight_map' object"));
  }
  absl::flat_hash_map<std::string, bool> checked_files;  // shard name -> exists
  for (const auto& [name, file] : index["weight_map"].items()) {
    if (!file.is_string() || !IsSafeRelativePath(file.get<std::string>())) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": tensor '", name, "': bad shard file name ", file.dump()));
    }
    const std::string shard = file.get<std::string>();
    // Existence is checked now (a stat, no mapping) so a broken index fails
    // at Open rather than in the middle of loading.
    auto [it, inserted] = checked_files.try_emplace(shard, false);
    if (inserted) it->second = IsRegularFile(absl::StrCat(dir, "/", shard));
    if (!it->second) {
      return absl::NotFoundError(absl::StrCat(index_path, ": tensor '", name, "' is in shard '",
                                              shard, "', which does not exist in ", dir));
    }
    ckpt->tensor_to_file_[name] = shard;
  }
  if (ckpt->tensor_to_file_.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": 'weight_map' is empty"));
  }
  return ckpt;
}

absl::StatusOr<const SafetensorsFile*> Checkpoint::OpenFile(const std::string& file) const {
  absl::MutexLock lock(&mutex_);
  auto it = files_.find(file);
  if (it != files_.end()) return it->second.get();
  // Opening under the lock serializes concurrent first uses of different
  // shards, but it only parses a header; tensor bytes are paged in later.
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> opened =
      SafetensorsFile::Open(absl::StrCat(dir_, "/", file));
  if (!opened.ok()) return opened.status();
  const SafetensorsFile* raw = opened->get();
  files_.emplace(file, *std::move(opened));
  return raw;
}

bool Checkpoint::Has(const std::string& name) const { return tensor_to_file_.contains(name); }

absl::StatusOr<TensorView> Checkpoint::GetAny(const std::string& name) const {
  auto it = tensor_to_file_.find(name);
  if (it == tensor_to_file_.end()) {
    return absl::NotFoundError(
        absl::StrCat(dir_, ": tensor '", name, "': missing from checkpoint"));
  }
  absl::StatusOr<const SafetensorsFile*> file = OpenFile(it->second);
  if (!file.ok()) return file.status();
  absl::StatusOr<const TensorView*> view = (*file)->Get(name);
  if (!view.ok()) {
    if (absl::IsNotFound(view.status())) {
      return absl::NotFoundError(absl::StrCat((*file)->path(), ": tensor '", name, "': listed in ",
                                              kIndexName, " but not in this shard"));
    }
    return view.status();
  }
  return **view;
}

absl::StatusOr<TensorView> Checkpoint::Get(const std::string& name,
                                           std::span<const kernels::DType> dtypes,
                                           std::span<const int64_t> shape) const {
  absl::StatusOr<TensorView> view = GetAny(name);
  if (!view.ok()) return view.status();
  if (std::find(dtypes.begin(), dtypes.end(), view->dtype) == dtypes.end()) {
    return absl::InvalidArgumentError(absl::StrCat(view->file, ": tensor '", name, "': dtype ",
                                                   std::string(kernels::DTypeName(view->dtype)),
                                                   " not in expected {", DTypeList(dtypes), "}"));
  }
  if (!std::equal(view->shape.begin(), view->shape.end(), shape.begin(), shape.end())) {
    return absl::InvalidArgumentError(absl::StrCat(view->file, ": tensor '", name, "': shape ",
                                                   ShapeString(view->shape), " != expected ",
                                                   ShapeString(shape)));
  }
  return view;
}

std::vector<std::string> Checkpoint::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(tensor_to_file_.size());
  for (const auto& [name, file] : tensor_to_file_) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

int Checkpoint::num_files_opened() const {
  absl::MutexLock lock(&mutex_);
  return static_cast<int>(files_.size());
}

}  // namespace xpd::model
