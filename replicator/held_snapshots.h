// The read side of a replicator's snapshot copies (snapshot_store.h writes them): which archives
// of a volume are held, and one of them opened with its part digests, for the restore service
// (restore_service.h) and for the store's own rotation.
//
// Safe from any thread: nothing here keeps state, and every file is opened beneath ROOT without
// following a symlink. An archive may be rotated away at any moment by a session thread: an
// archive opened before that stays readable through its descriptor.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/part_digests.h"
#include "common/result.h"
#include "common/unique_fd.h"

namespace bkp::replicator {

// The complete archives in a volume's snapshot directory: ids of its "<id>.tgz" names (valid
// snapshot ids only), oldest first. An unreadable directory lists nothing.
std::vector<std::string> archive_ids(int dir);

// ROOT/.snapshots/<host>/<escaped path>, without creating anything: ENOENT when this replica
// holds no snapshot directory for the volume. host and path must be validated already.
Result<UniqueFd> open_held_volume(const std::string& root, const std::string& host,
                                  const std::string& path);

// One held archive, open.
struct HeldSnapshot {
  std::string id;
  UniqueFd file;       // <id>.tgz, O_RDONLY
  uint64_t bytes = 0;  // its size when opened
  uint64_t part_size = 0;
  std::vector<PartDigest> digests;  // from <id>.parts
};

// Opens <id>.tgz in dir, with digests of kPartSize parts given by the caller (a live archive:
// replicator/live_archive.h). ENOENT when it is gone.
Result<HeldSnapshot> open_archive(int dir, const std::string& id, std::vector<PartDigest> digests);

// Opens <id>.tgz and reads <id>.parts in the volume directory dir. ENOENT when either is gone
// (rotated away); EBADMSG naming the file when the .parts file does not hold one digest per
// part of the archive.
Result<HeldSnapshot> open_held_snapshot(int dir, const std::string& id);

// Milliseconds since the epoch of a snapshot id ("20261126T010203.123Z"); 0 if it is not one.
int64_t snapshot_id_ms(const std::string& id);

}  // namespace bkp::replicator
