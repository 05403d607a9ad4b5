#include "common/base/npy.h"

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace xpd::base {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kCase[] = "tests/fixtures/dsv3-tiny/expected/bf16/single_len7/";

std::string TempPath(const std::string& name) { return ::testing::TempDir() + "/npy_" + name; }

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

TEST(NpyTest, ReadsFixtureInt32) {
  // Values checked independently with Python's struct module.
  absl::StatusOr<NpyArray> ids = ReadNpy(std::string(kCase) + "prompt_ids.npy");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(ids->dtype, "<i4");
  EXPECT_THAT(ids->shape, ElementsAre(7));
  EXPECT_THAT(ids->i32, ElementsAre(320, 350, 0, 296, 397, 511, 115));
  EXPECT_TRUE(ids->f32.empty());
}

TEST(NpyTest, ReadsFixtureFloat32And3d) {
  absl::StatusOr<NpyArray> logits = ReadNpy(std::string(kCase) + "prompt_logits.npy");
  ASSERT_TRUE(logits.ok()) << logits.status();
  EXPECT_EQ(logits->dtype, "<f4");
  EXPECT_THAT(logits->shape, ElementsAre(7, 512));
  ASSERT_EQ(logits->f32.size(), 7u * 512u);
  EXPECT_FLOAT_EQ(logits->f32[0], -3.5465292930603027f);
  EXPECT_FLOAT_EQ(logits->f32[1], 0.3072807192802429f);
  EXPECT_FLOAT_EQ(logits->f32.back(), -2.9216322898864746f);

  absl::StatusOr<NpyArray> experts = ReadNpy(std::string(kCase) + "routing_expert_ids.npy");
  ASSERT_TRUE(experts.ok()) << experts.status();
  EXPECT_THAT(experts->shape, ElementsAre(3, 7, 4));
  EXPECT_EQ(experts->num_elements(), 84);
  EXPECT_THAT(std::vector<int32_t>(experts->i32.begin(), experts->i32.begin() + 8),
              ElementsAre(14, 12, 7, 4, 0, 7, 3, 5));
}

TEST(NpyTest, RoundTripMatchesNumpyLayout) {
  const std::vector<float> values = {1.5f, -2.25f, 3.0f, 0.0f, 1e-8f, -7.0f};
  const std::string path = TempPath("roundtrip.npy");
  ASSERT_TRUE(WriteNpyF32(path, values.data(), {2, 3}).ok());
  const std::string bytes = ReadBytes(path);
  // Data starts at a multiple of 64 and the header ends with a newline.
  ASSERT_EQ(bytes.size() % 64, values.size() * 4 % 64);
  const size_t header_end = 10 + (static_cast<uint8_t>(bytes[8]) | (bytes[9] << 8));
  EXPECT_EQ(header_end % 64, 0u);
  EXPECT_EQ(bytes[header_end - 1], '\n');
  EXPECT_THAT(bytes.substr(10, 60),
              HasSubstr("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"));

  absl::StatusOr<NpyArray> back = ReadNpy(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_THAT(back->shape, ElementsAre(2, 3));
  EXPECT_EQ(back->f32, values);
  std::remove(path.c_str());
}

TEST(NpyTest, RoundTripInt32OneDimAndScalar) {
  const std::vector<int32_t> values = {-1, 0, 2147483647};
  const std::string path = TempPath("i32.npy");
  ASSERT_TRUE(WriteNpyI32(path, values.data(), {3}).ok());
  EXPECT_THAT(ReadBytes(path), HasSubstr("'shape': (3,), }"));
  absl::StatusOr<NpyArray> back = ReadNpy(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->i32, values);

  const float scalar = 4.0f;
  ASSERT_TRUE(WriteNpyF32(path, &scalar, {}).ok());
  back = ReadNpy(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(back->shape.empty());
  EXPECT_THAT(back->f32, ElementsAre(4.0f));
  std::remove(path.c_str());
}

// Builds a file the way NumPy does for an arbitrary header and version.
std::string MakeNpy(int major, const std::string& dict, const std::string& data) {
  std::string header = dict;
  const size_t prefix = major == 1 ? 10 : 12;
  header.append((64 - (prefix + header.size() + 1) % 64) % 64, ' ');
  header.push_back('\n');
  std::string out = std::string("\x93NUMPY", 6) + static_cast<char>(major) + '\0';
  const uint32_t len = header.size();
  out.push_back(static_cast<char>(len & 0xff));
  out.push_back(static_cast<char>((len >> 8) & 0xff));
  if (major == 2) {
    out.push_back(static_cast<char>((len >> 16) & 0xff));
    out.push_back(static_cast<char>(len >> 24));
  }
  return out + header + data;
}

TEST(NpyTest, ReadsVersion2) {
  const int32_t values[2] = {5, 6};
  const std::string path = TempPath("v2.npy");
  WriteBytes(path, MakeNpy(2, "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }",
                           std::string(reinterpret_cast<const char*>(values), 8)));
  absl::StatusOr<NpyArray> back = ReadNpy(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_THAT(back->i32, ElementsAre(5, 6));
  std::remove(path.c_str());
}

TEST(NpyTest, Errors) {
  const std::string path = TempPath("bad.npy");
  const std::string eight(8, '\0');
  struct Case {
    std::string bytes;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"not numpy at all", "bad magic"},
      {MakeNpy(3, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", eight),
       "format version 3.0"},
      {MakeNpy(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", eight),
       "dtype '<f8' is not supported"},
      {MakeNpy(1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", eight),
       "dtype '>f4' is not supported"},
      {MakeNpy(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", eight),
       "Fortran-order"},
      {MakeNpy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", eight),
       "data is 8 bytes but shape (3,) of <f4 needs 12"},
      {MakeNpy(1, "{'descr': '<f4', 'fortran_order': False}", eight), "lacks 'shape'"},
      {MakeNpy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,", eight), "bad header"},
      {MakeNpy(1, "['descr']", eight), "bad header"},
      {std::string("\x93NUMPY\x01\x00\xff\x00{", 11), "header length 255 exceeds the file"},
  };
  for (const Case& c : cases) {
    WriteBytes(path, c.bytes);
    absl::StatusOr<NpyArray> result = ReadNpy(path);
    ASSERT_FALSE(result.ok()) << c.message;
    EXPECT_THAT(result.status().message(), HasSubstr(c.message));
    EXPECT_THAT(result.status().message(), HasSubstr(path));
  }
  std::remove(path.c_str());
  absl::StatusOr<NpyArray> missing = ReadNpy(TempPath("does_not_exist.npy"));
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("cannot open"));
}

}  // namespace
}  // namespace xpd::base
