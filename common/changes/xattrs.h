// Extended attributes of one entry, read without following it, in every namespace the process
// can list (user., trusted., security., system.posix_acl_*): what a baseline ships and what a
// reconcile compares (by digest) to decide whether they must be shipped again.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace bkp::changes {

// name -> value, sorted by name.
using Xattrs = std::vector<std::pair<std::string, std::string>>;

// The attributes of dir_fd/name ("." for dir_fd itself), through the directory's
// /proc/self/fd magic link so symlinks and special files need no open and are never followed.
// What cannot be read is logged (naming rel) and left out; a filesystem without xattrs has none.
Xattrs read_xattrs(int dir_fd, const std::string& name, const std::string& rel);

// 0 for none; else a hash of every name and value (order as read_xattrs sorts them).
uint64_t xattr_digest(const Xattrs& xattrs);
// The names, each followed by a NUL (wire::ManifestEntry::xattr_names).
std::string xattr_names(const Xattrs& xattrs);

}  // namespace bkp::changes
