// Checking one snapshot archive for a verify (server/verify.h): that it reads back completely.
//
// Two independent reads of the file: its SHA-256 part digests against those the catalog
// recorded as the archive was written (common/part_digests.h), which finds any changed,
// missing or added byte; and a full read-through with libarchive (gzip members, then every pax
// header and every data block), which finds an archive that was wrong when written or whose
// digests were never recorded (catalogs older than part digests). A truncated archive fails both.
#pragma once

#include <string>
#include <vector>

#include "common/result.h"
#include "server/catalog.h"
#include "server/verify_compare.h"

namespace bkp::server {

struct SnapshotCheck {
  uint64_t bytes = 0;    // of the file
  uint64_t entries = 0;  // archive entries read through
  std::vector<Difference> differences;  // path: the snapshot's file name; what: digest, archive
};

// Checks the archive at `file` against its catalog record. ENOENT if the file is gone (rotated
// away since it was listed); other errors only for a file that cannot be opened or read.
Result<SnapshotCheck> check_snapshot(const std::string& file, const SnapshotRecord& record);

}  // namespace bkp::server
