// Snapshot copies on replicas (snapshot_copies.h).
#include "server/snapshot_copies.h"


#include <fmt/format.h>

#include <vector>

#include "common/clock.h"
#include "common/log.h"
#include "common/net/messenger.h"
#include "common/byte_source.h"
#include "common/part_digests.h"
#include "server/replica_session.h"

namespace bkp::server {

Result<bool> SnapshotShipper::step(const std::vector<std::shared_ptr<ReplicaStream>>& streams) {
  if (transfer_) {
    BKP_TRY_VOID(send_slice());
    return true;
  }
  for (const auto& s : streams) {
    const std::shared_ptr<Volume>& v = s->volume;
    VolumeCopies& copies = volumes_[v->name()];
    if (!copies.inventoried) {
      BKP_TRY_VOID(inventory(*v, copies));
      return true;
    }
    if (const uint64_t epoch = v->snapshot_epoch.load(); epoch != copies.epoch_seen) {
      copies.epoch_seen = epoch;
      find_missing(*v, copies);
    }
    if (BKP_TRY(begin_next(v, copies))) return true;
  }
  return false;
}

Result<void> SnapshotShipper::inventory(Volume& v, VolumeCopies& copies) {
  BKP_TRY_VOID(net::send_now(conn_, wire::SnapshotInventoryRequest{v.host(), v.path()}));
  auto held = BKP_TRY(net::expect<wire::SnapshotInventory>(conn_, kReplicaAckTimeoutMs));
  if (held.host != v.host() || held.path != v.path()) {
    return fail(EPROTO, fmt::format("the replica listed the snapshots of {}:{} for {}", held.host,
                                    held.path, v.name()));
  }
  copies.held = std::set<std::string>(held.ids.begin(), held.ids.end());
  copies.partial_id = held.partial_id;
  copies.partial_bytes = held.partial_bytes;
  copies.inventoried = true;
  if (auto noted = catalog_.note_copies(v.host(), v.path(), replica_.name(), held.ids, true,
                                        wall_ms());
      !noted) {
    log::warn("volume {}: replica {}: {}", v.name(), replica_.name(), noted.error().message);
  }
  return {};
}

void SnapshotShipper::find_missing(Volume& v, VolumeCopies& copies) {
  copies.missing.clear();
  auto present = catalog_.snapshots(v.host(), v.path(), false);
  if (!present) {
    log::warn("volume {}: snapshots for replica {}: {}", v.name(), replica_.name(),
              present.error().message);
    return;
  }
  for (size_t i = 0; i < present->size() && i < keep_; ++i) {
    SnapshotRecord& rec = (*present)[i];
    if (!copies.held.contains(rec.id) && !copies.refused.contains(rec.id)) {
      copies.missing.push_back(std::move(rec));
    }
  }
}

Result<bool> SnapshotShipper::begin_next(const std::shared_ptr<Volume>& v, VolumeCopies& copies) {
  while (!copies.missing.empty()) {
    SnapshotRecord rec = std::move(copies.missing.front());
    copies.missing.pop_front();
    if (copies.held.contains(rec.id)) continue;  // sent since it was queued
    auto source = v->archives().open(rec.id, ArchivePart::kArchive);
    if (!source && source.error().code == ENOENT) continue;  // rotated away since: skip it
    if (!source) return tl::unexpected(source.error());
    ByteSource& file = **source;
    const uint64_t bytes = file.size();
    if (rec.part_size == 0 || rec.digests.size() != part_count(bytes, rec.part_size)) {
      rec.part_size = static_cast<uint32_t>(kPartSize);
      rec.digests = BKP_TRY(digest_source(file, kPartSize).map_error(
          [&](Error e) { return e.wrap("digest " + file.where()); }));
      if (auto set = catalog_.set_digests(v->host(), v->path(), rec.id, rec.part_size, rec.digests);
          !set) {
        log::warn("volume {}: {}", v->name(), set.error().message);
      }
    }
    // Where a transfer cut earlier stopped, if the replica kept it (snapshot_store.h).
    const uint64_t start =
        rec.id == copies.partial_id && copies.partial_bytes < bytes ? copies.partial_bytes : 0;
    copies.partial_id.clear();
    copies.partial_bytes = 0;
    wire::SnapshotBegin begin{v->host(), v->path(), rec.id, bytes, static_cast<uint32_t>(keep_),
                              rec.part_size, rec.digests, start};
    BKP_TRY_VOID(net::send(conn_, begin));
    if (start > 0) {
      log::info("volume {}: resuming snapshot {} for replica {} at byte {} of {}", v->name(),
                rec.id, replica_.name(), start, bytes);
    } else {
      log::info("volume {}: sending snapshot {} ({} bytes) to replica {}", v->name(), rec.id,
                bytes, replica_.name());
    }
    transfer_ = Transfer{v, rec.id, std::move(*source), bytes, start};
    return true;
  }
  return false;
}

Result<void> SnapshotShipper::send_slice() {
  Transfer& t = *transfer_;
  std::vector<uint8_t> buf(wire::kMaxSnapshotData);
  const uint64_t stop = std::min(t.bytes, t.offset + kSnapshotSlice);
  while (t.offset < stop) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), stop - t.offset));
    const size_t n = BKP_TRY(t.file->read_at(
        t.offset, std::span<char>(reinterpret_cast<char*>(buf.data()), want)));
    if (n == 0) {
      // The archive shrank under us (it never should): the replica gets a short archive and
      // refuses it; the connection ends so both sides start clean.
      return fail(EIO, fmt::format("read snapshot {} at {}: it ended early", t.id, t.offset));
    }
    BKP_TRY_VOID(net::send(conn_, wire::SnapshotData{t.offset, std::span<const uint8_t>(buf.data(), n)}));
    t.offset += n;
  }
  if (t.offset < t.bytes) return conn_.flush();
  BKP_TRY_VOID(net::send_now(conn_, wire::SnapshotEnd{}));
  auto stored = BKP_TRY(net::expect<wire::SnapshotStored>(conn_, kSnapshotStoredTimeoutMs));
  Transfer done = std::move(t);
  transfer_.reset();
  if (stored.id != done.id) {
    return fail(EPROTO, fmt::format("the replica answered snapshot {} for {}", done.id, stored.id));
  }
  VolumeCopies& copies = volumes_[done.volume->name()];
  if (stored.code != 0) {
    Error e{static_cast<int>(stored.code),
            fmt::format("could not store snapshot {} of {}: {}", done.id, done.volume->name(),
                        stored.text)};
    log::error("replica {}: {}", replica_.name(), e.message);
    replica_.record_error(e);
    copies.refused.insert(done.id);
    return {};
  }
  copies.held.insert(done.id);
  log::info("volume {}: replica {} holds snapshot {}", done.volume->name(), replica_.name(),
            done.id);
  if (auto noted = catalog_.note_copies(done.volume->host(), done.volume->path(), replica_.name(),
                                        {done.id}, false, wall_ms());
      !noted) {
    log::warn("volume {}: {}", done.volume->name(), noted.error().message);
  }
  return {};
}

}  // namespace bkp::server
