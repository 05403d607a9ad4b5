// Minimal NumPy .npy reader/writer for reference tensors (test fixtures,
// debugging dumps). Only what xpd exchanges with NumPy: little-endian float32
// and int32 arrays in C order.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace xpd::base {

struct NpyArray {
  std::string dtype;           // "<f4" or "<i4"
  std::vector<int64_t> shape;  // empty for a 0-d array (one element)
  std::vector<float> f32;      // filled when dtype == "<f4"
  std::vector<int32_t> i32;    // filled when dtype == "<i4"

  int64_t num_elements() const;
};

// Writes format version 1.0, '<f4', C order; the header is padded so the data
// starts at a multiple of 64 bytes, as NumPy itself does.
absl::Status WriteNpyF32(const std::string& path, const float* data, std::vector<int64_t> shape);
// Same for '<i4'.
absl::Status WriteNpyI32(const std::string& path, const int32_t* data, std::vector<int64_t> shape);

// Reads '<f4' or '<i4' arrays, format version 1.0 or 2.0, C order. Anything else, a malformed
// header or a data size that does not match the shape is an error naming the file.
absl::StatusOr<NpyArray> ReadNpy(const std::string& path);

}  // namespace xpd::base
