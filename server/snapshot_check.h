// Checking one snapshot archive for a verify (server/verify.h): that it reads back completely.
//
// Two checks of its bytes, read once from wherever the archive is kept: its SHA-256 part
// digests against those the catalog recorded as the archive was written
// (common/part_digests.h), which finds any changed, missing or added byte; and a full read-through with libarchive (gzip members, then every pax
// header and every data block), which finds an archive that was wrong when written or whose
// digests were never recorded (catalogs older than part digests). A truncated archive fails both.
#pragma once

#include <string>
#include <vector>

#include "common/byte_source.h"
#include "common/result.h"
#include "server/catalog.h"
#include "server/verify_compare.h"

namespace bkp::server {

struct SnapshotCheck {
  uint64_t bytes = 0;    // of the file
  uint64_t entries = 0;  // archive entries read through
  std::vector<Difference> differences;  // path: the snapshot's file name; what: digest, archive
};

// Checks the archive read from `source` against its catalog record. Errors only for a source
// that cannot be read (ENOENT: an object rotated away while it was read).
Result<SnapshotCheck> check_snapshot(ByteSource& source, const SnapshotRecord& record);

}  // namespace bkp::server
