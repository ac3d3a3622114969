// What a verify compares (server/verify.h): two manifests of the same volume, the reference
// (the node's tree for the mirror, the mirror for a replica) and a copy, entry by entry, on what
// a user would miss after a restore: type, permission bits, owner, size (not of directories,
// whose size is the filesystem's business), mtime, device numbers, symlink target, extended
// attributes (by digest), which names are hard links of one file, and, when both manifests
// carry them (wire::kManifestContent), the content digests of regular files. Not compared:
// atime, ctime and link counts (the mirror's ids/ links count), which no restore reproduces.
#pragma once

#include <string>
#include <vector>

#include "common/changes/scan.h"

namespace bkp::server {

struct Difference {
  std::string path;    // volume-relative, "" is the root
  std::string what;    // missing, extra, type, mode, owner, size, mtime, device, target, xattrs,
                       // hard links, content
  std::string detail;  // both values, named by side ("0644 on the node, 0600 in the mirror")

  bool operator==(const Difference&) const = default;
};

// How the two sides are named in a Difference's detail: "on the node", "in the mirror".
struct Sides {
  std::string reference;
  std::string copy;
};

// Every difference, sorted by path then field. Under a directory missing from the copy (or
// extra in it) nothing more is listed: the directory says it all.
std::vector<Difference> compare_manifests(const changes::Manifest& reference,
                                          const changes::Manifest& copy, const Sides& sides);

// The differences of `second` also found, for the same path and field, in `first`: what a
// change in flight during the first comparison cannot explain (server/verify.cc).
std::vector<Difference> persisting(const std::vector<Difference>& first,
                                   const std::vector<Difference>& second);

// The differences whose entry did not change on the reference side at or after since_ns (its
// ctime_ns; an entry the reference lacks goes by its parent directory's): what changed while a
// verify ran may still be on its way. `changed` counts the others.
std::vector<Difference> settled(const std::vector<Difference>& differences,
                                const changes::Manifest& reference, int64_t since_ns,
                                size_t& changed);

}  // namespace bkp::server
