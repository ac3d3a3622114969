// Part digests (part_digests.h) with OpenSSL's SHA-256.
#include "common/part_digests.h"

#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

namespace bkp {

struct PartHasher::Ctx {
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  ~Ctx() { EVP_MD_CTX_free(md); }
};

PartHasher::PartHasher(uint64_t part_size) : ctx_(std::make_unique<Ctx>()), part_size_(part_size) {
  EVP_DigestInit_ex(ctx_->md, EVP_sha256(), nullptr);
}

PartHasher::~PartHasher() = default;

void PartHasher::feed(std::span<const char> bytes) {
  while (!bytes.empty()) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(bytes.size(), part_size_ - in_part_));
    EVP_DigestUpdate(ctx_->md, bytes.data(), n);
    in_part_ += n;
    fed_ += n;
    bytes = bytes.subspan(n);
    if (in_part_ == part_size_) close_part();
  }
}

const std::vector<PartDigest>& PartHasher::finish() {
  if (in_part_ > 0) close_part();
  return digests_;
}

void PartHasher::close_part() {
  PartDigest d{};
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx_->md, d.data(), &len);
  digests_.push_back(d);
  EVP_DigestInit_ex(ctx_->md, EVP_sha256(), nullptr);
  in_part_ = 0;
}

std::string to_hex(const PartDigest& d) {
  static const char* const kDigits = "0123456789abcdef";
  std::string out;
  out.reserve(64);
  for (uint8_t b : d) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 15]);
  }
  return out;
}

Result<PartDigest> digest_from_hex(std::string_view hex) {
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  PartDigest d{};
  if (hex.size() != 64) return fail(EINVAL, "a part digest is 64 hex digits");
  for (size_t i = 0; i < 32; ++i) {
    int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return fail(EINVAL, "a part digest is 64 lowercase hex digits");
    d[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return d;
}

}  // namespace bkp
