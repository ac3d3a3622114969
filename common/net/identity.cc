// Identities: key pairs and self-signed certificates kept in PEM files (see identity.h).
#include "common/net/identity.h"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>

#include <fmt/format.h>

#include "common/files.h"
#include "common/log.h"
#include "common/unique_fd.h"

namespace bkp::net {

void PkeyFree::operator()(evp_pkey_st* p) const { EVP_PKEY_free(p); }
void X509Free::operator()(x509_st* x) const { X509_free(x); }

namespace {

constexpr char kBase32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
constexpr size_t kIdChars = 52;  // ceil(256 / 5)
constexpr size_t kGroup = 4;
constexpr long kValidDays = 36500;

std::string grouped(std::string_view plain) {
  std::string out;
  for (size_t i = 0; i < plain.size(); ++i) {
    if (i > 0 && i % kGroup == 0) out += '-';
    out += plain[i];
  }
  return out;
}

Result<Identity> make_identity(const std::string& name) {
  Identity id;
  id.key.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  if (!id.key) return fail(EIO, "make a key pair: " + openssl_reason());
  id.cert.reset(X509_new());
  X509* x = id.cert.get();
  std::array<unsigned char, 16> serial{};
  if (!x || RAND_bytes(serial.data(), serial.size()) != 1) {
    return fail(EIO, "make a certificate: " + openssl_reason());
  }
  serial[0] &= 0x7f;  // a positive serial number
  BIGNUM* bn = BN_bin2bn(serial.data(), serial.size(), nullptr);
  bool ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) && X509_set_version(x, 2) &&
            X509_gmtime_adj(X509_getm_notBefore(x), 0) &&
            X509_time_adj_ex(X509_getm_notAfter(x), kValidDays, 0, nullptr) &&
            X509_set_pubkey(x, id.key.get());
  BN_free(bn);
  X509_NAME* subject = X509_get_subject_name(x);
  ok = ok && X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8,
                                        reinterpret_cast<const unsigned char*>(name.c_str()), -1,
                                        -1, 0) &&
       X509_set_issuer_name(x, subject) && X509_sign(x, id.key.get(), nullptr) > 0;
  if (!ok) return fail(EIO, "make a certificate: " + openssl_reason());
  id.id = fingerprint(x);
  return id;
}

Result<std::string> to_pem(const Identity& id) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  if (!bio || !PEM_write_bio_PrivateKey(bio.get(), id.key.get(), nullptr, nullptr, 0, nullptr,
                                        nullptr) ||
      !PEM_write_bio_X509(bio.get(), id.cert.get())) {
    return fail(EIO, "encode the identity: " + openssl_reason());
  }
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

Result<Identity> from_pem(const std::string& pem, const std::string& path) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())),
                                                BIO_free);
  Identity id;
  id.key.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  id.cert.reset(id.key ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!id.key || !id.cert) {
    return fail(EINVAL, fmt::format("{} does not hold a private key followed by its certificate: {}",
                                    path, openssl_reason()));
  }
  if (X509_check_private_key(id.cert.get(), id.key.get()) != 1) {
    ERR_clear_error();
    return fail(EINVAL, fmt::format("{}: the certificate does not belong to the key", path));
  }
  id.id = fingerprint(id.cert.get());
  id.path = path;
  return id;
}

Result<Identity> load(const std::string& path, int fd) {
  struct stat st {};
  if (fstat(fd, &st) != 0) return fail_errno("stat " + path);
  if (!S_ISREG(st.st_mode)) return fail(EINVAL, path + " is not a regular file");
  if ((st.st_mode & 077) != 0) {
    return fail(EACCES, fmt::format("{} holds a private key but has mode {:04o}; make it 0600 "
                                    "(chmod 600 {})", path, st.st_mode & 07777, path));
  }
  std::string pem(static_cast<size_t>(st.st_size), '\0');
  ssize_t n = pread(fd, pem.data(), pem.size(), 0);
  if (n < 0) return fail_errno("read " + path);
  pem.resize(static_cast<size_t>(n));
  return from_pem(pem, path);
}

}  // namespace

std::string openssl_reason() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "no further detail";
  std::array<char, 256> buf{};
  ERR_error_string_n(e, buf.data(), buf.size());
  return buf.data();
}

std::string fingerprint(x509_st* cert) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  X509_digest(cert, EVP_sha256(), md.data(), &len);
  std::string plain;
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned int i = 0; i < len; ++i) {
    acc = (acc << 8) | md[i];
    bits += 8;
    while (bits >= 5) {
      plain += kBase32[(acc >> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) plain += kBase32[(acc << (5 - bits)) & 31];
  return grouped(plain);
}

Result<std::string> parse_id(std::string_view text) {
  std::string plain;
  for (char c : text) {
    if (c == '-' || c == ' ') continue;
    char u = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (!std::strchr(kBase32, u) || u == '\0') {
      return fail(EINVAL, fmt::format("'{}' is not an identity: an identity is 52 letters and "
                                      "digits 2-7 (as --show-id prints it)", text));
    }
    plain += u;
  }
  if (plain.size() != kIdChars) {
    return fail(EINVAL, fmt::format("'{}' is not an identity: it has {} characters, an identity "
                                    "has 52 (as --show-id prints it)", text, plain.size()));
  }
  return grouped(plain);
}

int print_identity(const std::string& path, const std::string& name) {
  auto id = load_or_create_identity(path, name);
  if (!id) {
    log::error("{}", id.error().message);
    return 1;
  }
  std::printf("%s\n", id->id.c_str());
  return 0;
}

Result<std::vector<std::string>> read_ids(const std::string& path) {
  std::ifstream in(path);
  if (!in) return fail_errno("read " + path);
  std::vector<std::string> ids;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    line = line.substr(0, line.find('#'));
    size_t start = line.find_first_not_of(" \t");
    if (start == std::string::npos) continue;
    size_t end = line.find_first_of(" \t", start);
    auto id = parse_id(line.substr(start, end == std::string::npos ? end : end - start));
    if (!id) return tl::unexpected(id.error().wrap(fmt::format("{}:{}", path, number)));
    ids.push_back(std::move(*id));
  }
  return ids;
}

Result<Identity> load_or_create_identity(const std::string& path, const std::string& name) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd) return load(path, fd.get());
  if (errno != ENOENT) return fail_errno("open " + path);
  if (auto slash = path.rfind('/'); slash != std::string::npos && slash > 0) {
    BKP_TRY_VOID(make_dirs(path.substr(0, slash)));
  }
  Identity made = BKP_TRY(make_identity(name));
  std::string pem = BKP_TRY(to_pem(made));
  // Written under a unique name, synced, then linked into place: link() fails with EEXIST when
  // another process made one meanwhile, and then both use that one.
  std::string tmp = path + ".new.XXXXXX";
  UniqueFd out(mkostemp(tmp.data(), O_CLOEXEC));  // mode 0600
  if (!out) return fail_errno("create " + tmp);
  bool written = write(out.get(), pem.data(), pem.size()) == static_cast<ssize_t>(pem.size()) &&
                 fsync(out.get()) == 0;
  int saved = errno;
  if (!written) {
    unlink(tmp.c_str());
    return fail(saved, fmt::format("write {}: {}", tmp, std::strerror(saved)));
  }
  int linked = link(tmp.c_str(), path.c_str());
  saved = errno;
  unlink(tmp.c_str());
  if (linked != 0 && saved != EEXIST) {
    return fail(saved, fmt::format("create {}: {}", path, std::strerror(saved)));
  }
  fd.reset(open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return fail_errno("open " + path);
  return load(path, fd.get());
}

}  // namespace bkp::net
