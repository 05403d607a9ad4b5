#include "common/base/sha256.h"

#include <string>

#include "gtest/gtest.h"

namespace xpd::base {
namespace {

// FIPS 180-2, Appendix B: one-block, multi-block and long messages.
TEST(Sha256Test, Fips180_2OneBlockMessage) {
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256Test, Fips180_2MultiBlockMessage) {
  EXPECT_EQ(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256Test, Fips180_2LongMessage) {
  EXPECT_EQ(Sha256Hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256Test, EmptyMessage) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

// Lengths around the padding boundary (55, 56, 63, 64 bytes) and chunked
// updates must agree with one-shot hashing.
TEST(Sha256Test, IncrementalUpdatesMatchOneShot) {
  std::string data;
  for (int i = 0; i < 300; ++i) data.push_back(static_cast<char>('a' + i * 7 % 26));
  for (size_t length : {0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 300}) {
    const std::string_view message(data.data(), length);
    const Sha256Digest want = Sha256Of(message);
    for (size_t chunk : {1, 3, 63, 64, 100}) {
      Sha256 hasher;
      for (size_t pos = 0; pos < length; pos += chunk) {
        hasher.Update(message.substr(pos, chunk));
      }
      EXPECT_EQ(hasher.Finish(), want) << "length " << length << " chunk " << chunk;
    }
  }
}

TEST(Sha256Test, KnownBoundaryLengths) {
  // 56 bytes forces the length into a second padding block.
  EXPECT_EQ(Sha256Hex(std::string(56, 'a')),
            "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
  EXPECT_EQ(Sha256Hex(std::string(64, 'a')),
            "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb");
}

TEST(Sha256Test, ResetStartsOver) {
  Sha256 hasher;
  hasher.Update("garbage");
  hasher.Reset();
  hasher.Update("abc");
  EXPECT_EQ(DigestToHex(hasher.Finish()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

}  // namespace
}  // namespace xpd::base
