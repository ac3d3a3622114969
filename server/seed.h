// Seeding a mirror from a snapshot: a server that starts serving a volume it has no mirror of
// (it took the volume over from a server that died, or lost its state directory) fills the
// empty mirror from the volume's newest snapshot in the store, with the file ids kept beside it
// (server/file_ids.h), before it dials the node. The node's reconcile (common/stream/reconcile.h)
// then finds every file the snapshot holds under its own id and source ctime, and sends only
// what changed since the snapshot's cut: a takeover reads the store, not the application's
// node, and costs the node a metadata walk plus the changes.
//
// What the mirror gets is what a node's baseline would have given at the cut: directories,
// regular files (data regions only: holes stay holes), hard links, symlinks, fifos and device
// nodes, modes, owners, times and xattrs, played as the change stream's own operations
// into the Applier, so its ids/ links and source ctimes are its own records. A regular file the
// file ids do not name is left out (the reconcile sends it). Nothing of it is trusted further
// than a baseline: the reconcile compares every entry, and anything the node sees differently
// is sent again.
#pragma once

#include <atomic>
#include <cstdint>

#include "common/byte_source.h"
#include "common/changes/applier.h"
#include "common/result.h"
#include "server/catalog.h"
#include "server/file_ids.h"
#include "server/hub.h"
#include "server/volume.h"

namespace bkp::server {

struct Seeded {
  uint64_t entries = 0;   // archive entries played
  uint64_t files = 0;     // regular files (inodes) with their data
  uint64_t bytes = 0;     // data bytes written
  uint64_t skipped = 0;   // regular files without an id, left to the reconcile
};

// Plays the archive into applier, whose tree must be empty, and commits. With cancel, stops
// with ECANCELED "cancelled" at the next entry or block once it is true. Errors: the archive's
// (EBADMSG, the store's read error) or the applier's; the mirror is then partly seeded, which
// the reconcile repairs like any other difference.
Result<Seeded> seed_mirror(changes::Applier& applier, ByteSource& archive, const FileIds& ids,
                           const std::atomic<bool>* cancel = nullptr);

// The snapshot to seed the volume's mirror from: its newest, when the mirror is new here (it
// never had a stream and its tree is empty); nullopt otherwise, or when the volume has no
// snapshot. Errors: the catalog's.
Result<std::optional<SnapshotRecord>> seed_candidate(Volume& v, Catalog& catalog);

// Seeds the volume's mirror from the snapshot (seed_candidate's) in the volume's store, before
// its node is dialed. Replica streams wait meanwhile (the mirror reads as syncing,
// Applier::syncing); at the end, whatever the outcome, the sync is closed and every stream of
// the volume is given a scan of the mirror (Hub::rescan_streams: one that began on the empty
// mirror must not take the seeded one for what it sent). nullopt when the snapshot has no file
// ids (written before they existed, or their write failed): nothing was seeded. Errors: the
// store's, the archive's or the applier's; the mirror may then be partly seeded, which the
// node's reconcile repairs.
Result<std::optional<Seeded>> seed_volume(Volume& v, Hub& hub, const SnapshotRecord& snapshot,
                                          const std::atomic<bool>* cancel);

}  // namespace bkp::server
