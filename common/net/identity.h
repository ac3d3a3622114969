// Identity: who a backupfs process is on the network. Every daemon (backupd, each backupfs
// node, each replicator) and every remote bkptool has a key pair and a self-signed certificate,
// made on first start and kept in one PEM file (key then certificate, mode 0600). Peers know
// each other by the certificate's fingerprint, not by a CA: the operator pins fingerprints
// (`backupfs --server-id`, `bkptool register --node-id`, `bkptool replica add`, `bkptool
// operator add`), as Syncthing does with device IDs.
//
// The fingerprint is the SHA-256 of the certificate's DER bytes, in base32 (RFC 4648 alphabet,
// no padding, 52 characters), shown in 13 groups of 4 joined by '-'. parse_id accepts it in any
// case, with or without the dashes.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

struct evp_pkey_st;
struct x509_st;

namespace bkp::net {

struct PkeyFree { void operator()(evp_pkey_st* p) const; };
struct X509Free { void operator()(x509_st* x) const; };

struct Identity {
  std::unique_ptr<evp_pkey_st, PkeyFree> key;
  std::unique_ptr<x509_st, X509Free> cert;
  std::string id;    // the fingerprint of cert, grouped
  std::string path;  // where it is kept
};

// Loads the identity kept at path, or makes a new one there when there is none (Ed25519, a
// certificate naming `name`, valid for 100 years; missing parent directories are made).
// Creation is atomic: two processes starting at once end up with the same identity. Refused (EACCES) when the file is readable or writable
// by group or others, EINVAL when it is not a regular file or does not hold a key and its
// certificate.
Result<Identity> load_or_create_identity(const std::string& path, const std::string& name);

// --show-id of every daemon: prints the identity kept at path (made if missing) on stdout and
// returns 0, or logs why it cannot and returns 1.
int print_identity(const std::string& path, const std::string& name);

// The oldest error OpenSSL queued on this thread, as text (the queue is cleared): the detail of
// a failed OpenSSL call, for an error message.
std::string openssl_reason();

// The grouped fingerprint of a certificate.
std::string fingerprint(x509_st* cert);

// Canonical grouped form of an identity given by a user; EINVAL with a clear message for
// anything that is not 52 base32 characters (dashes and spaces ignored).
Result<std::string> parse_id(std::string_view text);

// The identities listed in a file, one per line; blank lines and '#' comments are skipped, and
// a line may add a name after the identity ("ID  backupd on host b1"). EINVAL names the line
// that is not an identity.
Result<std::vector<std::string>> read_ids(const std::string& path);

}  // namespace bkp::net
