#include "common/model/safetensors_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <numeric>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace xpd::model {
namespace {

absl::Status IoError(const std::string& path, absl::string_view what, int err) {
  return absl::InternalError(absl::StrCat(path, ": ", what, ": ", std::strerror(err)));
}

// pwrite until done: regular files may still return short counts.
absl::Status WriteAll(int fd, const std::byte* data, size_t size, uint64_t offset,
                      const std::string& path) {
  while (size > 0) {
    const ssize_t n = ::pwrite(fd, data, size, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return IoError(path, "write failed", errno);
    }
    data += n;
    size -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

absl::Status WriteTextFile(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return IoError(tmp, "cannot create", errno);
  absl::Status status =
      WriteAll(fd, reinterpret_cast<const std::byte*>(text.data()), text.size(), 0, tmp);
  if (::close(fd) != 0 && status.ok()) status = IoError(tmp, "close failed", errno);
  if (status.ok() && std::rename(tmp.c_str(), path.c_str()) != 0) {
    status = IoError(path, "rename failed", errno);
  }
  if (!status.ok()) std::remove(tmp.c_str());
  return status;
}

}  // namespace

absl::Status SafetensorsWriter::Add(const std::string& name, kernels::DType dtype,
                                    std::vector<int64_t> shape, FillFn fill) {
  return AddRaw(name, std::string(kernels::DTypeName(dtype)), kernels::DTypeSize(dtype),
                std::move(shape), std::move(fill));
}

absl::Status SafetensorsWriter::AddRaw(const std::string& name, const std::string& dtype,
                                       int element_size, std::vector<int64_t> shape, FillFn fill) {
  if (name.empty() || name == "__metadata__") {
    return absl::InvalidArgumentError(absl::StrCat("bad tensor name '", name, "'"));
  }
  for (const Tensor& t : tensors_) {
    if (t.name == name) {
      return absl::AlreadyExistsError(absl::StrCat("tensor '", name, "' declared twice"));
    }
  }
  if (element_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': bad element size"));
  }
  int64_t elements = 1;
  for (int64_t dim : shape) {
    if (dim < 0) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': negative dimension"));
    }
    elements *= dim;
  }
  tensors_.push_back(Tensor{name, dtype, element_size, std::move(shape), elements * element_size,
                            std::move(fill)});
  return absl::OkStatus();
}

void SafetensorsWriter::SetMetadata(const std::string& key, const std::string& value) {
  metadata_[key] = value;
}

int64_t SafetensorsWriter::data_bytes() const {
  int64_t total = 0;
  for (const Tensor& t : tensors_) total += t.size_bytes;
  return total;
}

absl::Status SafetensorsWriter::Write(const std::string& path, int num_threads,
                                      const ProgressFn& progress) const {
  std::vector<size_t> order(tensors_.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (tensors_[a].element_size != tensors_[b].element_size) {
      return tensors_[a].element_size > tensors_[b].element_size;
    }
    return tensors_[a].name < tensors_[b].name;
  });

  // Header in data order, "__metadata__" last, as the reference files have it.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  std::vector<uint64_t> offsets(tensors_.size());
  uint64_t offset = 0;
  for (size_t index : order) {
    const Tensor& t = tensors_[index];
    offsets[index] = offset;
    header[t.name] = {
        {"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.size_bytes}}};
    offset += t.size_bytes;
  }
  header["__metadata__"] = metadata_;
  std::string header_text =
      header.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  header_text.append((8 - header_text.size() % 8) % 8, ' ');  // data starts 8-aligned
  const uint64_t data_start = 8 + header_text.size();
  const uint64_t total = offset;

  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return IoError(tmp, "cannot create", errno);
  std::string prefix(8, '\0');
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<char>((header_text.size() >> (8 * i)) & 0xff);
  prefix += header_text;
  absl::Status status =
      WriteAll(fd, reinterpret_cast<const std::byte*>(prefix.data()), prefix.size(), 0, tmp);

  // Workers claim tensors in file order and pwrite them at their offsets, so
  // memory stays at one tensor per thread whatever the file size.
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{!status.ok()};
  std::mutex mutex;  // guards status, done and progress calls
  int64_t done = 0;
  auto worker = [&] {
    std::vector<std::byte> buffer;
    while (!failed.load()) {
      const size_t i = next.fetch_add(1);
      if (i >= order.size()) break;
      const Tensor& t = tensors_[order[i]];
      buffer.assign(static_cast<size_t>(t.size_bytes), std::byte{0});
      if (t.fill) t.fill(std::span<std::byte>(buffer));
      absl::Status written =
          WriteAll(fd, buffer.data(), buffer.size(), data_start + offsets[order[i]], tmp);
      std::lock_guard<std::mutex> lock(mutex);
      if (!written.ok()) {
        if (status.ok()) status = written;
        failed = true;
        break;
      }
      done += t.size_bytes;
      if (progress) progress(done, static_cast<int64_t>(total));
    }
  };
  const int threads = std::max(1, std::min<int>(num_threads, static_cast<int>(order.size())));
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back(worker);
  worker();
  for (std::thread& thread : pool) thread.join();

  if (::close(fd) != 0 && status.ok()) status = IoError(tmp, "close failed", errno);
  if (status.ok() && std::rename(tmp.c_str(), path.c_str()) != 0) {
    status = IoError(path, "rename failed", errno);
  }
  if (!status.ok()) std::remove(tmp.c_str());
  return status;
}

absl::Status WriteSafetensorsIndex(const std::string& path,
                                   const std::map<std::string, std::string>& weight_map,
                                   int64_t total_size) {
  nlohmann::ordered_json index = {{"metadata", {{"total_size", total_size}}},
                                  {"weight_map", nlohmann::ordered_json::object()}};
  for (const auto& [name, file] : weight_map) index["weight_map"][name] = file;
  return WriteTextFile(path, index.dump(2) + "\n");
}

std::string ShardFileName(int shard, int num_shards) {
  return absl::StrFormat("model-%05d-of-%05d.safetensors", shard + 1, num_shards);
}

}  // namespace xpd::model
