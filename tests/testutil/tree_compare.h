// Tree comparison: the assertion behind every convergence test (DESIGN.md invariant 3).
//
// Both trees are walked with lstat semantics (symlinks are never followed) and compared: first
// the set of names, then entry by entry type, permission bits, owner, size, symlink target,
// device number, mtime to the nanosecond (files, symlinks and directories) and extended
// attributes (every name the process can list, in every namespace, and its value), then the
// hard-link partition of every non-directory (regular files, symlinks, fifos, sockets,
// devices), then the hole map of regular files (the byte ranges SEEK_DATA/SEEK_HOLE report as
// data, which must be identical: a hole on one side and written zeros on the other is a
// difference), then file content byte for byte. Hard links are compared as a partition (which
// paths share an inode), not by st_nlink: the mirror and replicas keep one extra link per file
// under their ids directories, outside the tree.
//
// The result is the first difference as a sentence a human can act on, e.g.
// "a/b: mode 100644 vs 100600", or "" when the trees are equal. Entries that vanish during the
// walk are reported as differences, so callers simply poll until "" (trees still changing).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace bkp::testutil {

struct CompareOptions {
  bool mtime = true;       // compare st_mtim of every entry
  bool owner = true;       // compare uid and gid
  bool content = true;     // compare regular files byte for byte (after all metadata matched)
  bool root_attrs = true;  // compare the two root directories' own mode, owner, mtime, xattrs
  bool xattrs = true;      // compare the names and values of every entry's extended attributes
  bool holes = true;       // compare where regular files have data and where holes (both trees
                           // must be on filesystems reporting holes alike, e.g. both ext4;
                           // skipped for files with unwritten extents on either side)
};

// "" when equal; otherwise the first difference, naming the relative path ("." is the root).
std::string compare_trees(const std::string& a, const std::string& b,
                          const CompareOptions& options = {});

struct TreeStats {
  uint64_t files = 0;
  uint64_t dirs = 0;  // not counting the root
  uint64_t symlinks = 0;
  uint64_t others = 0;
  uint64_t bytes = 0;  // sum of regular file sizes, each inode once
};

// nullopt if root cannot be walked.
std::optional<TreeStats> tree_stats(const std::string& root);

}  // namespace bkp::testutil
