#include "common/model/safetensors_file.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/model/safetensors_writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace xpd::model {
namespace {

using kernels::DType;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string TempPath(const std::string& name) { return ::testing::TempDir() + "/st_" + name; }

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// 8-byte little-endian length + header text + data.
std::string Assemble(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t len = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((len >> (8 * i)) & 0xff);
  return out + header + data;
}

// A valid file from the writer: F32 "a" [2,3], BF16 "b" [4], I64 "c" [2].
std::string WriteSample(const std::string& name) {
  SafetensorsWriter writer;
  EXPECT_TRUE(writer
                  .Add("a", DType::kF32, {2, 3},
                       [](std::span<std::byte> out) {
                         for (int i = 0; i < 6; ++i) {
                           const float v = 0.5f * i;
                           std::memcpy(out.data() + 4 * i, &v, 4);
                         }
                       })
                  .ok());
  EXPECT_TRUE(writer
                  .Add("b", DType::kBF16, {4},
                       [](std::span<std::byte> out) {
                         for (int i = 0; i < 4; ++i) {
                           const uint16_t v = kernels::F32ToBf16(-1.0f * i);
                           std::memcpy(out.data() + 2 * i, &v, 2);
                         }
                       })
                  .ok());
  EXPECT_TRUE(writer
                  .AddRaw("c", "I64", 8, {2},
                          [](std::span<std::byte> out) { std::memset(out.data(), 7, out.size()); })
                  .ok());
  const std::string path = TempPath(name);
  EXPECT_TRUE(writer.Write(path, 2).ok());
  return path;
}

std::string OpenError(const std::string& path) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  return file.ok() ? "(opened fine)" : std::string(file.status().message());
}

TEST(SafetensorsFileTest, WriterOutputReadsBack) {
  const std::string path = WriteSample("sample.safetensors");
  const std::string bytes = ReadBytes(path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  EXPECT_EQ((8 + header_len) % 8, 0u);  // data section 8-aligned
  // Layout: element size descending, then name: c (8), a (4), b (2).
  const nlohmann::json header = nlohmann::json::parse(bytes.substr(8, header_len));
  EXPECT_EQ(header["c"]["data_offsets"], nlohmann::json({0, 16}));
  EXPECT_EQ(header["a"]["data_offsets"], nlohmann::json({16, 40}));
  EXPECT_EQ(header["b"]["data_offsets"], nlohmann::json({40, 48}));
  EXPECT_EQ(header["__metadata__"]["format"], "pt");
  EXPECT_EQ(bytes.size(), 8 + header_len + 48);

  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_THAT((*file)->TensorNames(), ElementsAre("a", "b", "c"));
  const TensorView* a = (*file)->Find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->dtype, DType::kF32);
  EXPECT_THAT(a->shape, ElementsAre(2, 3));
  EXPECT_EQ(a->num_elements(), 6);
  EXPECT_EQ(a->size_bytes, 24u);
  EXPECT_EQ(a->file, path);
  float values[6];
  std::memcpy(values, a->data, 24);
  EXPECT_THAT(values, ElementsAre(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 2.5f));
  const TensorView* b = (*file)->Find("b");
  ASSERT_NE(b, nullptr);
  uint16_t b3;
  std::memcpy(&b3, b->data + 6, 2);
  EXPECT_EQ(kernels::Bf16ToF32(b3), -3.0f);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a->data) % 4, 0u);
  // I64 is kept but only usable through Get, which explains the refusal.
  EXPECT_EQ((*file)->Find("c"), nullptr);
  absl::StatusOr<const TensorView*> c = (*file)->Get("c");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr(path + ": tensor 'c': dtype I64 is not supported"));
  absl::StatusOr<const TensorView*> d = (*file)->Get("d");
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(), HasSubstr(path + ": tensor 'd': not in file"));
  std::remove(path.c_str());
}

TEST(SafetensorsFileTest, ReadsFixtureHeaderAndValues) {
  const std::string path = "tests/fixtures/dsv3-tiny/models/bf16/model.safetensors";
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->TensorNames().size(), 269u);  // 270 header keys minus __metadata__
  const TensorView* norm = (*file)->Find("model.norm.weight");
  ASSERT_NE(norm, nullptr);
  uint16_t bits;
  std::memcpy(&bits, norm->data, 2);
  EXPECT_EQ(kernels::Bf16ToF32(bits), 1.09375f);  // checked with Python
}

TEST(SafetensorsFileTest, TruncatedFile) {
  const std::string path = TempPath("short.safetensors");
  WriteBytes(path, "abc");
  EXPECT_THAT(OpenError(path), HasSubstr(path + ": truncated: 3 bytes"));
  WriteBytes(path, "");
  EXPECT_THAT(OpenError(path), HasSubstr("truncated: 0 bytes"));
  // A valid file cut short in its data section: the last tensor's offsets
  // now point past the end.
  const std::string good = ReadBytes(WriteSample("cut.safetensors"));
  WriteBytes(path, good.substr(0, good.size() - 1));
  EXPECT_THAT(OpenError(path), HasSubstr("tensor 'b': data_offsets [40, 48] out of range of the "
                                         "47-byte data section"));
  std::remove(path.c_str());
  std::remove(TempPath("cut.safetensors").c_str());
}

TEST(SafetensorsFileTest, HeaderLengthErrors) {
  const std::string path = TempPath("len.safetensors");
  std::string bytes = ReadBytes(WriteSample("len_src.safetensors"));
  const uint64_t huge = bytes.size();  // larger than what follows the length field
  std::memcpy(bytes.data(), &huge, 8);
  WriteBytes(path, bytes);
  EXPECT_THAT(OpenError(path), HasSubstr(absl::StrCat("truncated: header length ", huge,
                                                      " exceeds the ", huge - 8, " bytes")));
  const uint64_t enormous = ~0ull;
  std::memcpy(bytes.data(), &enormous, 8);
  WriteBytes(path, bytes);
  EXPECT_THAT(OpenError(path), HasSubstr("exceeds"));
  WriteBytes(path, Assemble("{", ""));
  EXPECT_THAT(OpenError(path), HasSubstr("header length 1 is too small"));
  std::remove(path.c_str());
  std::remove(TempPath("len_src.safetensors").c_str());
}

TEST(SafetensorsFileTest, HeaderContentErrors) {
  const std::string path = TempPath("hdr.safetensors");
  struct Case {
    std::string header;
    std::string data;
    std::string message;
  };
  const std::string f32 = R"("dtype":"F32","shape":[2])";
  const std::vector<Case> cases = {
      {"{\"a\": {", "", "bad header JSON"},
      {"[1, 2, 3]", "", "header is not a JSON object (got array)"},
      {R"({"a": 5})", "", "tensor 'a': header entry is not an object"},
      {R"({"a": {"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0'),
       "tensor 'a': unknown dtype 'Q4'"},
      {R"({"a": {"shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0'),
       "tensor 'a': missing string 'dtype'"},
      {R"({"a": {"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", std::string(8, '\0'),
       "tensor 'a': bad shape [-2]"},
      {"{\"a\": {" + f32 + R"(,"data_offsets":[0]}})", std::string(8, '\0'),
       "tensor 'a': missing or malformed 'data_offsets'"},
      {"{\"a\": {" + f32 + R"(,"data_offsets":[0,16]}})", std::string(8, '\0'),
       "tensor 'a': data_offsets [0, 16] out of range of the 8-byte data section"},
      {"{\"a\": {" + f32 + R"(,"data_offsets":[8,0]}})", std::string(8, '\0'),
       "tensor 'a': data_offsets [8, 0] out of range"},
      {"{\"a\": {" + f32 + R"(,"data_offsets":[0,6]}})", std::string(8, '\0'),
       "tensor 'a': data_offsets [0, 6] span 6 bytes but shape [2] of F32 needs 8"},
      {R"({"a": {"dtype":"BF16","shape":[3,2],"data_offsets":[0,8]}})", std::string(8, '\0'),
       "span 8 bytes but shape [3, 2] of BF16 needs 12"},
      {"{\"a\": {" + f32 + R"(,"data_offsets":[0,8]},"b": {)" + f32 + R"(,"data_offsets":[4,12]}})",
       std::string(12, '\0'), "tensor 'b': data_offsets [4, 12] overlap tensor 'a' [0, 8]"},
  };
  for (const Case& c : cases) {
    WriteBytes(path, Assemble(c.header, c.data));
    const std::string error = OpenError(path);
    EXPECT_THAT(error, HasSubstr(c.message)) << c.header;
    EXPECT_THAT(error, HasSubstr(path)) << c.header;
  }
  // Valid edge cases: metadata ignored, trailing spaces, scalar, empty tensor.
  WriteBytes(path, Assemble(R"({"__metadata__":{"format":"pt"},"s":{"dtype":"F32","shape":[],)"
                            R"("data_offsets":[0,4]},"e":{"dtype":"F32","shape":[0,3],)"
                            R"("data_offsets":[4,4]}}   )",
                            std::string(4, '\0')));
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_THAT((*file)->TensorNames(), ElementsAre("e", "s"));
  EXPECT_EQ((*file)->Find("s")->num_elements(), 1);
  EXPECT_EQ((*file)->Find("e")->num_elements(), 0);
  std::remove(path.c_str());
  EXPECT_THAT(OpenError(path), HasSubstr(path + ": cannot open"));
}

TEST(SafetensorsWriterTest, RejectsBadDeclarations) {
  SafetensorsWriter writer;
  EXPECT_TRUE(writer.Add("x", DType::kF32, {1}, nullptr).ok());
  EXPECT_FALSE(writer.Add("x", DType::kF32, {1}, nullptr).ok());
  EXPECT_FALSE(writer.Add("", DType::kF32, {1}, nullptr).ok());
  EXPECT_FALSE(writer.Add("__metadata__", DType::kF32, {1}, nullptr).ok());
  EXPECT_FALSE(writer.Add("y", DType::kF32, {-1}, nullptr).ok());
  const absl::Status status = writer.Write("/nonexistent-dir/x.safetensors");
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr("cannot create"));
}

TEST(SafetensorsWriterTest, ManyTensorsManyThreadsAndIndex) {
  // Fill order across threads must not change the bytes.
  auto build = [](int threads, const std::string& path) {
    SafetensorsWriter writer;
    for (int i = 0; i < 50; ++i) {
      const DType dtype = i % 3 == 0 ? DType::kF32 : (i % 3 == 1 ? DType::kBF16 : DType::kF8E4M3);
      EXPECT_TRUE(writer
                      .Add(absl::StrCat("t", i), dtype, {i + 1, 3},
                           [i](std::span<std::byte> out) {
                             for (size_t k = 0; k < out.size(); ++k) {
                               out[k] = static_cast<std::byte>(i * 31 + k);
                             }
                           })
                      .ok());
    }
    int64_t last = 0;
    EXPECT_TRUE(writer
                    .Write(path, threads,
                           [&](int64_t done, int64_t total) {
                             EXPECT_GT(done, last);
                             EXPECT_LE(done, total);
                             last = done;
                           })
                    .ok());
    EXPECT_EQ(last, writer.data_bytes());
  };
  build(1, TempPath("one.safetensors"));
  build(4, TempPath("four.safetensors"));
  EXPECT_EQ(ReadBytes(TempPath("one.safetensors")), ReadBytes(TempPath("four.safetensors")));
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::Open(TempPath("four.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->TensorNames().size(), 50u);
  EXPECT_EQ(static_cast<int>((*file)->Find("t7")->data[2]), (7 * 31 + 2) & 0xff);
  std::remove(TempPath("one.safetensors").c_str());
  std::remove(TempPath("four.safetensors").c_str());

  const std::string index = TempPath("index.json");
  ASSERT_TRUE(WriteSafetensorsIndex(index, {{"b", "f2"}, {"a", "f1"}}, 123).ok());
  const nlohmann::json parsed = nlohmann::json::parse(ReadBytes(index));
  EXPECT_EQ(parsed["metadata"]["total_size"], 123);
  EXPECT_EQ(parsed["weight_map"]["a"], "f1");
  EXPECT_EQ(parsed["weight_map"]["b"], "f2");
  std::remove(index.c_str());
  EXPECT_EQ(ShardFileName(1, 5), "model-00002-of-00005.safetensors");
}

}  // namespace
}  // namespace xpd::model
