// Reconcile by manifest: how a sender whose receiver needs a baseline avoids re-sending what the
// receiver already holds (a backupfs or backupd restart costs a metadata walk, not the volume).
//
// The sender asks (ManifestRequest); the receiver walks its tree and answers with Manifest
// frames, one entry per name (path, type and mode, owner, size, mtime, rdev, FileId, the source
// ctime its Applier recorded, symlink target, xattr digest and names), in frames of at most
// kManifestChunk bytes, the last one flagged. The sender then scans its own tree with
// changes::ScanOptions::have set to it (scan.h decides what is equal) and ships the result as an
// ordinary baseline: kSyncBegin, ops (kKeep for what is equal), data only for what differs,
// kSyncEnd, which removes what the receiver has and the source does not.
//
// A file the receiver holds under the same FileId but not exactly (its ctime moved: content
// rewritten, or only chmod, rename, a new link) and of at least changes::kVerifyMin bytes is
// then narrowed by block digests: the sender asks for the digest (XXH3 of the bytes, seeded with
// the block's layout of data and holes) of each kDigestBlock of the receiver's copy (DigestRequest / Digests, up to kMaxDigests blocks per round trip), hashes
// its own, and ships only the blocks that differ — a 10 GiB file with one changed block costs
// 128 KiB plus 80 KiB of digests, not 10 GiB. Within those blocks, what is a hole on the sender
// goes as kPunch, not as zeros. The hashes are read on both sides; nothing else moves.
#pragma once

#include <cstddef>

#include "common/changes/applier.h"
#include "common/changes/change_log.h"
#include "common/changes/scan.h"
#include "common/changes/shipper.h"
#include "common/net/conn.h"
#include "common/result.h"
#include "common/wire/messages.h"

namespace bkp::stream {

constexpr size_t kManifestChunk = 1u << 20;
constexpr uint32_t kDigestBlock = 128 * 1024;
constexpr uint32_t kMaxDigests = 4096;  // per round trip: 512 MiB of file, read in a second or two

// Receiver side: answers a ManifestRequest with the applier's tree. The caller serializes this
// with applying frames (it walks the tree those frames change).
Result<void> send_manifest(net::Conn& conn, const changes::Applier& applier);

// Sender side, or a verify: asks (ManifestRequest{flags}) and collects the whole manifest.
// timeout_ms bounds the wait for each frame.
Result<changes::Manifest> fetch_manifest(net::Conn& conn, int timeout_ms, uint8_t flags = 0);

// A verify's manifest (server/verify.h): every entry of the tree at tree_fd, regular files
// labelled by inode number (so hard links share an id), every entry with its own ctime (when it
// last changed on this side), and with wire::kManifestContent a content digest of each regular
// file. Only reads the tree: safe while an applier or an application changes it (an entry is as
// the walk found it; one gone meanwhile is left out). send_tree_manifest answers a
// ManifestRequest with it (a node, a replica); walk_manifest collects it here (backupd's mirror).
// An Applier's tree is read through its placeholders (changes::Applier::placeholders()).
Result<void> send_tree_manifest(net::Conn& conn, int tree_fd, uint8_t flags,
                                const changes::DevicePlaceholders* placeholders = nullptr);
Result<changes::Manifest> walk_manifest(int tree_fd, uint8_t flags,
                                        const changes::DevicePlaceholders* placeholders = nullptr);

// Receiver side: answers one DigestRequest from the applier's copy of the file.
Result<void> send_digests(net::Conn& conn, const changes::Applier& applier,
                          const wire::DigestRequest& request);

struct Narrowed {
  uint64_t files = 0;       // files verified
  uint64_t kept_bytes = 0;  // bytes found equal, not shipped
};

// Sender side, after a reconcile scan went into log: narrows every file marked verify to the
// blocks whose digests differ, reading the sender's copies through source.
Result<Narrowed> narrow_by_digests(net::Conn& conn, changes::ChangeLog& log,
                                   changes::DataSource& source, int timeout_ms);

}  // namespace bkp::stream
