// Kernel file handles: how backupfs names a backing file for its whole life.
//
// A handle (name_to_handle_at) identifies an inode of the backing filesystem independently of
// any name, survives renames and backupfs restarts, and is never reused for another file (the
// inode generation is part of it). backupfs keeps the raw bytes — the struct file_handle header
// followed by f_handle — and reopens files with open_by_handle_at(mount_fd, ...), which needs
// CAP_DAC_READ_SEARCH (we run as root). The FileId on the wire is the XXH3-64 of those bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/changes/scan.h"
#include "common/changes/shipper.h"
#include "common/result.h"
#include "common/unique_fd.h"

namespace bkp::fs {

// The handle of name in dir_fd (flags 0: the entry itself, never following a symlink), or of
// dir_fd itself with name "" and flags AT_EMPTY_PATH.
Result<std::string> handle_at(int dir_fd, const char* name, int flags);

// Opens the file a handle names. ESTALE when the file no longer exists.
Result<UniqueFd> open_by_handle(int mount_fd, std::string_view handle, int flags);

// The wire FileId of a handle: XXH3-64 of its bytes, never 0 (0 means "no file" on the wire).
uint64_t file_id_of(std::string_view handle);

// The baseline scan's way of naming a regular file: same handle and id as the FUSE side.
changes::Identify make_identify();

// The shipper's view of the tree: regular files reopened read-only by handle, without touching
// their atime. ESTALE becomes ENOENT ("the file is gone", which the shipper skips).
class HandleSource : public changes::DataSource {
 public:
  explicit HandleSource(int mount_fd) : mount_fd_(mount_fd) {}
  Result<UniqueFd> open_file(const changes::FileRef& file) override;

 private:
  int mount_fd_;  // not owned; the root directory of the tree
};

}  // namespace bkp::fs
