// Verify: does every copy of a volume still hold what it should (`bkptool verify`)?
//
// Three checks, each a comparison with the copy it was made from:
// - the mirror against the node's tree: a manifest of the node's tree (asked on a connection of
//   its own, wire::AttachPurpose::kManifest, beside the stream) against a walk of the mirror;
// - with `replicas`, each replica its copies are placed on against the mirror: the replica's
//   manifest (asked through its session between batches, manifest_asks.h) against a walk of
//   the mirror;
// - with `snapshots`, every snapshot archive on backupd, read back whole (snapshot_check.h),
//   and with `replicas` too, each replica's inventory of its snapshot copies against the
//   copies the catalog recorded as stored there.
// With `read_data` the manifests carry a content digest of every regular file, read on each
// side; without it, metadata only (server/verify_compare.h says what is compared).
//
// Changes in flight: the node's tree and the mirror move while they are walked, so a first
// comparison may show what is merely on its way. A comparison that finds differences is made
// again once the stream caught up (the node reports nothing unacknowledged after the first
// round; a replica's stream has nothing left to send, ManifestAsks::when_current), both sides
// walked again, and only differences found both times (same path and field) are reported. A
// difference reported is one the stream did not repair between the two rounds, on an entry
// that did not change on the reference side since the verify began. A copy whose
// stream had still not caught up by then is reported as not checked (its differences may be
// on their way), never as differing. Nothing holds
// the volume's mutex: the mirror keeps applying throughout, and the replica stream pauses only
// while the replicator walks its tree (as for a reconcile).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "server/catalog.h"
#include "server/registry.h"
#include "server/verify_compare.h"

namespace bkp::server {

struct VerifyOptions {
  bool snapshots = false;
  bool replicas = false;
  bool read_data = false;
};

// One copy checked: the mirror (against the node), a replica (against the mirror) or a snapshot.
struct CopyCheck {
  // kSnapshotCopies: which snapshot copies a replica holds (with snapshots and replicas).
  enum class Kind { kMirror, kReplica, kSnapshot, kSnapshotCopies };
  Kind kind = Kind::kMirror;
  std::string name;   // "mirror", the replica's name, the snapshot's id
  std::string error;  // why it could not be checked; "" if it was
  uint64_t entries = 0;  // entries compared (snapshots: archive entries read)
  size_t changed = 0;    // differences left out: their entry changed during the verify
  std::vector<Difference> differences;
};
// "mirror", "replica", "snapshot", "snapshot copies"
const char* copy_kind_name(CopyCheck::Kind kind);

struct VerifyReport {
  VerifyRecord record;  // as stored in the catalog
  VerifyOptions options;
  std::vector<CopyCheck> copies;
};

// Runs a verify of the target now, on the calling thread, and records it in the catalog (a
// catalog that cannot store it is logged; the report is returned anyway). stopping ends the
// waits early (backupd shutting down).
VerifyReport verify_volume(const VerifyTarget& target, Registry& registry,
                           const VerifyOptions& options, const std::atomic<bool>& stopping);

}  // namespace bkp::server
