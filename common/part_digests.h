// Part digests of snapshot archives: SHA-256 of every kPartSize bytes (the last part shorter),
// computed by backupd as it writes an archive and recorded in its catalog, checked by a
// replicator as it receives a copy and kept beside it, so any part can be checked wherever it is
// fetched from (a restore from several sources, `verify`). SHA-256 rather than a fast hash: a
// part may come from a peer that is not trusted to be honest, only authenticated.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"

namespace bkp {

constexpr uint64_t kPartSize = uint64_t{8} << 20;

using PartDigest = std::array<uint8_t, 32>;

// How many parts an archive of `bytes` has (0 for an empty one).
inline uint64_t part_count(uint64_t bytes, uint64_t part_size = kPartSize) {
  return (bytes + part_size - 1) / part_size;
}

// Digests a stream fed in pieces of any size, part by part.
class PartHasher {
 public:
  explicit PartHasher(uint64_t part_size = kPartSize);
  ~PartHasher();
  PartHasher(const PartHasher&) = delete;
  PartHasher& operator=(const PartHasher&) = delete;

  void feed(std::span<const char> bytes);
  // The digests of the parts completed so far (all of them after finish()).
  const std::vector<PartDigest>& digests() const { return digests_; }
  // Closes the last, shorter part (if any bytes of it were fed).
  const std::vector<PartDigest>& finish();
  uint64_t fed() const { return fed_; }

 private:
  void close_part();

  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
  const uint64_t part_size_;
  uint64_t in_part_ = 0;
  uint64_t fed_ = 0;
  std::vector<PartDigest> digests_;
};

// Lowercase hex, and back (EINVAL for anything but 64 hex digits).
std::string to_hex(const PartDigest& d);
Result<PartDigest> digest_from_hex(std::string_view hex);

}  // namespace bkp
