// One mmap'ed .safetensors file: an 8-byte little-endian header length, a JSON
// header {name: {dtype, shape, data_offsets}} and raw little-endian data.
// Opening parses and validates the header only; tensor bytes are touched
// (paged in) only when a caller reads them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "kernels/core/dtype.h"

namespace xpd::model {

struct TensorView {
  std::string name;
  std::string file;  // path of the file holding it, for error messages
  kernels::DType dtype = kernels::DType::kF32;
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;  // points into the mapping; aligned as the file is
  size_t size_bytes = 0;

  int64_t num_elements() const;
};

class SafetensorsFile {
 public:
  // Fails with a message naming the file and, where one is involved, the
  // tensor: unreadable file, truncated file, bad header length, bad header
  // JSON, unknown dtype, offsets out of range or overlapping, size not equal
  // to shape x dtype. Tensors of dtypes xpd does not compute with (e.g. I64)
  // are an error only when asked for.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  const TensorView* Find(const std::string& name) const;  // nullptr if absent
  std::vector<std::string> TensorNames() const;           // sorted
  // Like Find, but tells an absent tensor ("<path>: tensor 'x': not in file")
  // from one whose dtype xpd does not compute with ("...: dtype I64 is not
  // supported"). TensorNames() lists both kinds; Find() returns only usable ones.
  absl::StatusOr<const TensorView*> Get(const std::string& name) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* mapping_ = nullptr;
  size_t mapping_size_ = 0;
  absl::flat_hash_map<std::string, TensorView> tensors_;
  absl::flat_hash_map<std::string, std::string> unsupported_;  // name -> safetensors dtype
};

}  // namespace xpd::model
