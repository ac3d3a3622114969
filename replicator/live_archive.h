// A replica's tree archived as it is now, for `bkptool restore --live` while backupd is down
// (issue 13 item 4): the copy on this replicator is then the newest state of the volume that
// can still be had anywhere.
//
// The tree must hold still while it is archived: every replica session (one per backupd the
// replicator follows) holds `still` shared for as long as it is connected (it applies the stream
// then), and the archive takes it exclusively, so it is written only once no session runs. So a
// live restore from a replica works exactly when every backupd it follows is away — when one is
// up, its mirror is the live tree and is ahead of every replica (and a volume whose server died
// moves to a live one) — and a session that reconnects meanwhile waits for the archive to be
// written, never the other way round.
//
// The archive is the same tgz a scheduled snapshot is (server/snapshot.h: backupd's writer,
// built into the replicator too), written under ROOT/.live/ and unlinked as soon as it is open:
// it lives as long as the returned descriptor, and a crash leaves at most a directory that the
// next live archive removes.
#pragma once

#include <chrono>
#include <shared_mutex>
#include <string>

#include "common/result.h"
#include "replicator/held_snapshots.h"

namespace bkp::replicator {

// How long a live archive waits for the replica sessions to let go of the trees.
constexpr auto kStillWait = std::chrono::seconds(2);

// Archives ROOT/<host>/<escaped path> (host and path validated already). Errors: ENOENT when
// this replica holds no tree of that volume; EBUSY when a session kept `still` for kStillWait
// (it is connected to a backupd); the archiver's otherwise (ENOSPC under ROOT...).
Result<HeldSnapshot> archive_live_tree(const std::string& root, const std::string& host,
                                       const std::string& path, std::shared_timed_mutex& still);

}  // namespace bkp::replicator
