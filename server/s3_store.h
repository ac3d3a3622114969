// S3ArchiveStore: a volume's snapshot archives as objects in an S3-compatible bucket
// (`snapshot_store = "s3://bucket/prefix"` in backupd.toml), so several backupd instances share
// them and a server's disk holds no archive at all.
//
// Keys: PREFIX<host>/<escaped path>/<id>.tgz (the escaping of the volume directories,
// common/path.h). An archive is streamed up as it is written, as a multipart upload of
// kS3PartBytes parts (no second local copy), and exists for listings and reads only once the
// upload is completed, which S3 makes atomic; an archive smaller than one part is sent with one
// PUT at commit. A sink destroyed without commit aborts its upload; uploads a crash left open
// are aborted by remove_partial() at startup. Reads are ranged GETs of at least kS3ReadAhead
// bytes, kept, so a restore's 1 MiB reads cost one request per 8 MiB.
//
// Thread-safety: as ArchiveStore. Every call, sink and source uses its own S3Client (a client is
// one thread's), so nothing is shared but the credentials.
#pragma once

#include <memory>
#include <string>

#include "server/archive_store.h"
#include "server/s3_client.h"
#include "server/s3_config.h"

namespace bkp::server {

constexpr uint64_t kS3PartBytes = uint64_t{16} << 20;
constexpr uint64_t kS3ReadAhead = uint64_t{8} << 20;

class S3ArchiveStore final : public ArchiveStore {
 public:
  // The store of one volume: archives under location's prefix + volume_prefix.
  S3ArchiveStore(std::shared_ptr<const S3Credentials> credentials, S3Location location,
                 const std::string& volume_prefix);

  const std::string& where() const override { return where_; }
  Result<std::unique_ptr<ArchiveSink>> create(const std::string& id, ArchivePart part) override;
  Result<std::unique_ptr<ByteSource>> open(const std::string& id, ArchivePart part) override;
  Result<std::vector<StoredArchive>> list() override;
  Result<void> remove(const std::string& id) override;
  size_t remove_partial() override;

 private:
  Result<S3Client> client() const;
  std::string key(const std::string& id, ArchivePart part) const;

  std::shared_ptr<const S3Credentials> credentials_;
  std::string bucket_;
  std::string prefix_;  // location prefix + volume prefix, ending in '/'
  std::string where_;   // "s3://bucket/prefix"
};

// Makes sure the bucket exists (created if not); what backupd checks at startup.
Result<void> prepare_bucket(const S3Credentials& credentials, const S3Location& location);

}  // namespace bkp::server
