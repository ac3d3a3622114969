// ArchiveStore: where one volume's snapshot archives are kept, "<id>.tgz" each, with beside it
// "<id>.ids", the file ids of its regular files (server/file_ids.h), when they could be
// written. The default is
// a directory on backupd's disk (LocalArchiveStore, STATE/volumes/<host>/<path>/snapshots); a
// prefix in an S3-compatible bucket is the other (server/s3_store.h, `snapshot_store` in
// backupd.toml). The archive writer, rotation, startup recovery, restores, snapshot copies and
// verify go through this interface only, so they work the same on either.
//
// Atomicity (DESIGN.md invariant 5) is the store's: an archive is visible under its name only
// once it is complete and durable (ArchiveSink::commit); one that is never committed leaves
// nothing a listing shows, and remove_partial() clears what a crash left behind.
//
// Thread-safety: a store may be used from several threads at once (every call stands alone);
// a sink belongs to one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/byte_source.h"
#include "common/result.h"

namespace bkp::server {

// One archive being written. Destroying it without commit() discards everything written.
class ArchiveSink {
 public:
  virtual ~ArchiveSink() = default;
  virtual Result<void> write(std::span<const char> bytes) = 0;
  // Makes the archive durable and visible under its name; returns its size.
  virtual Result<uint64_t> commit() = 0;
};

// The objects of one snapshot. Its file ids are written after the archive is complete, so an
// archive may lack them (a crash in between, or one written before they existed), never the
// other way round; remove() deletes both.
enum class ArchivePart { kArchive, kFileIds };
// ".tgz" or ".ids".
std::string_view part_suffix(ArchivePart part);

struct StoredArchive {
  std::string id;  // "20261126T010203.123Z"
  uint64_t bytes = 0;
};

class ArchiveStore {
 public:
  virtual ~ArchiveStore() = default;
  // For messages: the directory or the s3:// URL of the volume's prefix.
  virtual const std::string& where() const = 0;
  virtual Result<std::unique_ptr<ArchiveSink>> create(const std::string& id, ArchivePart part) = 0;
  // ENOENT when there is no such object (rotated away, or file ids never written).
  virtual Result<std::unique_ptr<ByteSource>> open(const std::string& id, ArchivePart part) = 0;
  // The complete archives, newest first.
  virtual Result<std::vector<StoredArchive>> list() = 0;
  // Deletes the archive and its file ids; what is already gone is no error.
  virtual Result<void> remove(const std::string& id) = 0;
  // Deletes what interrupted writes left; returns how many.
  virtual size_t remove_partial() = 0;
};

// Keeps the newest `keep` archives of the store, deletes the others; returns the ids deleted.
Result<std::vector<std::string>> rotate_archives(ArchiveStore& store, size_t keep);

// A directory: "<id>.tgz" under their final names, ".tmp-<id>.tgz" while written (fsync, rename,
// fsync of the directory on commit). The directory is created on the first write.
class LocalArchiveStore final : public ArchiveStore {
 public:
  explicit LocalArchiveStore(std::string dir) : dir_(std::move(dir)) {}
  const std::string& where() const override { return dir_; }
  Result<std::unique_ptr<ArchiveSink>> create(const std::string& id, ArchivePart part) override;
  Result<std::unique_ptr<ByteSource>> open(const std::string& id, ArchivePart part) override;
  Result<std::vector<StoredArchive>> list() override;
  Result<void> remove(const std::string& id) override;
  size_t remove_partial() override;

 private:
  std::string path_of(const std::string& id, ArchivePart part) const;

  std::string dir_;
};

}  // namespace bkp::server
