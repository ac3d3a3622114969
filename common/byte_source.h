// ByteSource: the bytes of one stored archive, read at any offset, wherever they are kept: a
// file on this machine (FileSource) or an object in S3-compatible storage (server/s3_store.h).
// Restores stream byte ranges from it, snapshot copies send it to replicas, verify reads it
// through; none of them needs to know where the archive lives.
//
// A source is opened on one version of the archive: rotation that deletes the archive later
// does not change what an open FileSource reads (the descriptor holds the inode); an object
// store reads by name, so a deleted object reads as ENOENT.
//
// Thread-safety: read_at() of one source may be called from one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "common/part_digests.h"
#include "common/result.h"
#include "common/unique_fd.h"

namespace bkp {

class ByteSource {
 public:
  virtual ~ByteSource() = default;
  virtual uint64_t size() const = 0;
  // Up to buf.size() bytes at offset; fewer only at the end (0 past it).
  virtual Result<size_t> read_at(uint64_t offset, std::span<char> buf) = 0;
  // Where the bytes are, for messages: a path or an s3:// URL.
  virtual const std::string& where() const = 0;
};

// A regular file, open for reading; owns its descriptor or borrows one.
class FileSource final : public ByteSource {
 public:
  // ENOENT when the file is not there.
  static Result<FileSource> open(const std::string& path);
  FileSource(int fd, uint64_t size, std::string where);  // borrows fd
  FileSource(FileSource&&) = default;

  uint64_t size() const override { return size_; }
  Result<size_t> read_at(uint64_t offset, std::span<char> buf) override;
  const std::string& where() const override { return where_; }

 private:
  FileSource(UniqueFd fd, uint64_t size, std::string where);

  UniqueFd owned_;
  int fd_;
  uint64_t size_;
  std::string where_;
};

// Reads the whole source in order, handing each piece to `take` (pieces of up to 1 MiB).
Result<void> read_all(ByteSource& source, const std::function<Result<void>(std::span<const char>)>& take);

// The part digests (common/part_digests.h) of the whole source.
Result<std::vector<PartDigest>> digest_source(ByteSource& source, uint64_t part_size = kPartSize);

}  // namespace bkp
