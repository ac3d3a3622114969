// A snapshot's file ids: for every regular file the archive holds, its path, the FileId the
// node gave it and the source ctime its content matched at the cut (0: unknown). A tar entry
// has no place for either (an xattr would be restored onto the user's files), so they are kept
// beside the archive, "<id>.ids" in its store (server/archive_store.h), written once the
// archive is complete.
//
// Why: a mirror seeded from a snapshot (server/seed.h) must hold the node's ids and ctimes for
// the node's reconcile to trust what it holds (common/stream/reconcile.h); without them every
// file would be sent again, and a server taking a volume over would read the whole volume on
// the application's node.
//
// Format: "bkp-file-ids 1\n", then one zstd frame of records, each: u32 path length, the path
// (volume-relative), u64 id, i64 ctime in nanoseconds, little-endian.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>

#include "common/result.h"
#include "server/archive_store.h"

namespace bkp::server {

struct FileIdRecord {
  uint64_t id = 0;
  int64_t source_ctime = 0;
};

// By volume-relative path (every name of a hard-linked file).
using FileIds = std::unordered_map<std::string, FileIdRecord>;

class FileIdsWriter {
 public:
  void add(const std::string& path, FileIdRecord record);
  size_t count() const { return count_; }
  // The encoded object (the writer is spent).
  Result<std::string> finish();

 private:
  std::string records_;
  size_t count_ = 0;
};

// Writes the snapshot's file ids into the store, beside its archive (archive_store.h): once
// the archive is committed, never before. The writer is spent.
Result<void> store_file_ids(ArchiveStore& store, const std::string& id, FileIdsWriter& ids);

// The snapshot's file ids from the store; nullopt if it has none (archive_store.h says when).
// EBADMSG for an object FileIdsWriter did not make, or one cut short.
Result<std::optional<FileIds>> load_file_ids(ArchiveStore& store, const std::string& id);

}  // namespace bkp::server
