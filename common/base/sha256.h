// SHA-256 (FIPS 180-4). Used to recognise known chat templates by the hash of
// their text; OpenSSL is not a dependency, so this is a small self-contained
// implementation. Not constant-time: do not use it for secrets.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace xpd::base {

using Sha256Digest = std::array<uint8_t, 32>;

// Incremental hashing: Update() any number of times, then Finish() once.
class Sha256 {
 public:
  Sha256();

  void Update(std::string_view data);
  // Pads, returns the digest and leaves the object unusable until Reset().
  Sha256Digest Finish();
  void Reset();

 private:
  void Compress(const uint8_t* block);

  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_;
  size_t buffered_ = 0;       // bytes in buffer_
  uint64_t total_bytes_ = 0;  // message length so far
};

Sha256Digest Sha256Of(std::string_view data);
// Lower-case hex, 64 characters.
std::string Sha256Hex(std::string_view data);
std::string DigestToHex(const Sha256Digest& digest);

}  // namespace xpd::base
