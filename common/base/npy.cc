#include "common/base/npy.h"

#include <cctype>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <optional>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"

namespace xpd::base {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;
// Real headers are a few hundred bytes; the cap keeps a corrupt length from
// driving a huge allocation.
constexpr size_t kMaxHeaderLen = 1 << 20;

absl::Status Error(const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

// Parses the Python dict literal NumPy writes, e.g.
// {'descr': '<f4', 'fortran_order': False, 'shape': (7, 512), }
// Values are strings, True/False or tuples of integers; nothing else occurs.
class HeaderParser {
 public:
  struct Value {
    std::optional<std::string> str;
    std::optional<bool> boolean;
    std::optional<std::vector<int64_t>> tuple;
  };

  explicit HeaderParser(std::string_view text) : text_(text) {}

  absl::StatusOr<std::map<std::string, Value>> Parse() {
    std::map<std::string, Value> out;
    SkipSpace();
    if (!Consume('{')) return Fail("expected '{'");
    while (true) {
      SkipSpace();
      if (Consume('}')) break;
      std::optional<std::string> key = ParseString();
      if (!key) return Fail("expected a quoted key");
      SkipSpace();
      if (!Consume(':')) return Fail("expected ':'");
      SkipSpace();
      Value value;
      if (Peek() == '\'' || Peek() == '"') {
        value.str = ParseString();
        if (!value.str) return Fail("unterminated string");
      } else if (ConsumeWord("True")) {
        value.boolean = true;
      } else if (ConsumeWord("False")) {
        value.boolean = false;
      } else if (Consume('(')) {
        value.tuple = ParseTupleRest();
        if (!value.tuple) return Fail("malformed shape tuple");
      } else {
        return Fail("unexpected value");
      }
      if (out.count(*key)) return Fail(absl::StrCat("duplicate key '", *key, "'"));
      out[*key] = std::move(value);
      SkipSpace();
      if (Consume(',')) continue;
      if (Consume('}')) break;
      return Fail("expected ',' or '}'");
    }
    SkipSpace();
    if (pos_ != text_.size()) return Fail("trailing characters after the dict");
    return out;
  }

 private:
  absl::Status Fail(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("bad header at offset ", pos_, ": ", what));
  }
  char Peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  void SkipSpace() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }
  bool Consume(char c) {
    if (Peek() != c) return false;
    ++pos_;
    return true;
  }
  bool ConsumeWord(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }
  std::optional<std::string> ParseString() {
    const char quote = Peek();
    if (quote != '\'' && quote != '"') return std::nullopt;
    const size_t end = text_.find(quote, pos_ + 1);
    if (end == std::string_view::npos) return std::nullopt;
    std::string out(text_.substr(pos_ + 1, end - pos_ - 1));
    pos_ = end + 1;
    return out;
  }
  // After '(': "7, 512)" or "7,)" or ")".
  std::optional<std::vector<int64_t>> ParseTupleRest() {
    std::vector<int64_t> dims;
    while (true) {
      SkipSpace();
      if (Consume(')')) return dims;
      if (!std::isdigit(static_cast<unsigned char>(Peek()))) return std::nullopt;
      int64_t dim = 0;
      while (std::isdigit(static_cast<unsigned char>(Peek()))) {
        if (dim > (std::numeric_limits<int64_t>::max() - 9) / 10) return std::nullopt;
        dim = dim * 10 + (text_[pos_++] - '0');
      }
      Consume('L');  // Python 2 long suffix
      dims.push_back(dim);
      SkipSpace();
      if (Consume(',')) continue;
      if (Consume(')')) return dims;
      return std::nullopt;
    }
  }

  std::string_view text_;
  size_t pos_ = 0;
};

std::string ShapeTuple(const std::vector<int64_t>& shape) {
  if (shape.size() == 1) return absl::StrCat("(", shape[0], ",)");
  return absl::StrCat("(", absl::StrJoin(shape, ", "), ")");
}

absl::Status WriteNpy(const std::string& path, absl::string_view descr, const void* data,
                      size_t element_size, const std::vector<int64_t>& shape) {
  int64_t count = 1;
  for (int64_t dim : shape) {
    if (dim < 0) return Error(path, absl::StrCat("negative dimension ", dim));
    count *= dim;
  }
  std::string header = absl::StrCat(
      "{'descr': '", descr, "', 'fortran_order': False, 'shape': ", ShapeTuple(shape), ", }");
  // magic(6) + version(2) + length(2) + header + '\n' must be a multiple of 64.
  const size_t unpadded = kMagicLen + 2 + 2 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  if (header.size() > 65535) return Error(path, "shape too long for a version 1.0 header");

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return Error(path, absl::StrCat("cannot open for writing: ", std::strerror(errno)));
  const uint16_t header_len = static_cast<uint16_t>(header.size());
  const char prefix[] = {kMagic[0],
                         kMagic[1],
                         kMagic[2],
                         kMagic[3],
                         kMagic[4],
                         kMagic[5],
                         1,
                         0,
                         static_cast<char>(header_len & 0xff),
                         static_cast<char>(header_len >> 8)};
  out.write(prefix, sizeof(prefix));
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(count * element_size));
  out.close();
  if (!out) return Error(path, "write failed");
  return absl::OkStatus();
}

}  // namespace

int64_t NpyArray::num_elements() const {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  return count;
}

absl::Status WriteNpyF32(const std::string& path, const float* data, std::vector<int64_t> shape) {
  return WriteNpy(path, "<f4", data, sizeof(float), shape);
}

absl::Status WriteNpyI32(const std::string& path, const int32_t* data, std::vector<int64_t> shape) {
  return WriteNpy(path, "<i4", data, sizeof(int32_t), shape);
}

absl::StatusOr<NpyArray> ReadNpy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error(path, absl::StrCat("cannot open: ", std::strerror(errno)));
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return Error(path, "read failed");

  if (bytes.size() < kMagicLen + 4 || bytes.compare(0, kMagicLen, kMagic, kMagicLen) != 0) {
    return Error(path, "not a .npy file (bad magic)");
  }
  const uint8_t major = static_cast<uint8_t>(bytes[6]);
  const uint8_t minor = static_cast<uint8_t>(bytes[7]);
  size_t header_len = 0;
  size_t header_start = 0;
  if (major == 1 && minor == 0) {
    header_len = static_cast<uint8_t>(bytes[8]) | (static_cast<uint8_t>(bytes[9]) << 8);
    header_start = 10;
  } else if (major == 2 && minor == 0) {
    if (bytes.size() < 12) return Error(path, "truncated header");
    for (int i = 3; i >= 0; --i)
      header_len = (header_len << 8) | static_cast<uint8_t>(bytes[8 + i]);
    header_start = 12;
  } else {
    return Error(path, absl::StrCat("unsupported .npy format version ", int{major}, ".", int{minor},
                                    " (only 1.0 and 2.0)"));
  }
  if (header_len > kMaxHeaderLen || header_start + header_len > bytes.size()) {
    return Error(path, absl::StrCat("header length ", header_len, " exceeds the file (",
                                    bytes.size(), " bytes)"));
  }
  auto dict = HeaderParser(std::string_view(bytes).substr(header_start, header_len)).Parse();
  if (!dict.ok()) return Error(path, dict.status().message());
  for (const auto& [key, value] : *dict) {
    if (key != "descr" && key != "fortran_order" && key != "shape") {
      return Error(path, absl::StrCat("unexpected header key '", key, "'"));
    }
  }
  auto descr = dict->find("descr");
  auto fortran = dict->find("fortran_order");
  auto shape = dict->find("shape");
  if (descr == dict->end() || !descr->second.str) return Error(path, "header lacks 'descr'");
  if (fortran == dict->end() || !fortran->second.boolean) {
    return Error(path, "header lacks 'fortran_order'");
  }
  if (shape == dict->end() || !shape->second.tuple) return Error(path, "header lacks 'shape'");
  if (*fortran->second.boolean) return Error(path, "Fortran-order arrays are not supported");

  NpyArray array;
  array.dtype = *descr->second.str;
  if (array.dtype != "<f4" && array.dtype != "<i4") {
    return Error(path,
                 absl::StrCat("dtype '", array.dtype, "' is not supported (only '<f4' and '<i4')"));
  }
  array.shape = *shape->second.tuple;
  int64_t count = 1;
  for (int64_t dim : array.shape) {
    if (dim != 0 && count > std::numeric_limits<int64_t>::max() / 4 / dim) {
      return Error(path, "shape too large");
    }
    count *= dim;
  }
  const size_t data_start = header_start + header_len;
  const size_t data_bytes = bytes.size() - data_start;
  if (data_bytes != static_cast<size_t>(count) * 4) {
    return Error(path,
                 absl::StrCat("data is ", data_bytes, " bytes but shape ", ShapeTuple(array.shape),
                              " of ", array.dtype, " needs ", count * 4));
  }
  // Little-endian host (x86-64/aarch64), so the bytes are the values.
  if (count == 0) return array;
  if (array.dtype == "<f4") {
    array.f32.resize(count);
    std::memcpy(array.f32.data(), bytes.data() + data_start, data_bytes);
  } else {
    array.i32.resize(count);
    std::memcpy(array.i32.data(), bytes.data() + data_start, data_bytes);
  }
  return array;
}

}  // namespace xpd::base
