// A verify of one volume (see verify.h): fetch, compare, compare again what differed once the
// stream caught up, read the snapshots back, record the outcome.
//
// Each comparison is a pair of manifests fetched in the order the data flows (the node before
// the mirror, the replica before the mirror), so the copy has had the longest time to receive
// what the reference showed. A difference on an entry that changed on the reference side since
// the verify began (its ctime) is left out as possibly in flight, and counted. Any other makes
// a second round: the same fetch after waiting for the stream (for the node, until a
// NodeStatus that arrived after the first round says nothing is unacknowledged, at most
// kCatchUpWait; for a replica, until its session finds the stream with nothing to send). A
// copy whose stream is still behind then is not checked rather than reported as differing.
#include "server/verify.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <optional>
#include <set>
#include <thread>
#include <utility>

#include "common/clock.h"
#include "common/log.h"
#include "common/stream/reconcile.h"
#include "server/link.h"
#include "server/snapshot_check.h"

namespace bkp::server {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr int kManifestFrameTimeoutMs = 600000;  // with content digests, a frame is many reads
constexpr auto kCatchUpWait = 30s;
constexpr auto kCatchUpPoll = 100ms;
constexpr auto kAskWait = 30min;  // a replica's walk (with --read-data: its whole copy read)

// One comparison's manifests. behind: why the copy may still lack changes on their way ("" if
// its stream had caught up).
struct Round {
  changes::Manifest reference, copy;
  std::string behind;
};

std::string counted(size_t n, const char* one, const char* many) {
  return fmt::format("{} {}", n, n == 1 ? one : many);
}

class Verifier {
 public:
  Verifier(const VerifyTarget& target, Registry& registry, const VerifyOptions& options,
           const std::atomic<bool>& stopping)
      : target_(target), registry_(registry), stopping_(stopping),
        flags_(options.read_data ? wire::kManifestContent : 0) {
    report_.options = options;
    report_.record.host = target.reg.host;
    report_.record.path = target.reg.path;
  }

  VerifyReport run() {
    report_.record.started_at = wall_ms();
    // The node's ctimes are by its own clock: this assumes it agrees with ours (NTP). One
    // behind ours by a few seconds only lets changes of those first seconds count as settled.
    since_ns_ = report_.record.started_at * 1'000'000;
    check_mirror();
    if (report_.options.replicas) {
      for (const auto& name : target_.replicas) check_replica(name);
    }
    if (report_.options.snapshots) check_snapshots();
    finish();
    return std::move(report_);
  }

 private:
  void check_mirror() {
    CopyCheck check{.kind = CopyCheck::Kind::kMirror, .name = "mirror"};
    auto fetch = [this](bool second) -> Result<Round> {
      std::string behind = second ? wait_node_caught_up() : "";
      auto node = BKP_TRY(node_manifest());
      return Round{std::move(node), BKP_TRY(mirror_manifest()), std::move(behind)};
    };
    compare_twice(check, Sides{"on the node", "in the mirror"}, fetch);
  }

  void check_replica(const std::string& name) {
    CopyCheck check{.kind = CopyCheck::Kind::kReplica, .name = name};
    std::shared_ptr<Replica> replica = registry_.hub().find_replica(name);
    if (!replica || !replica->connected()) {
      check.error = fmt::format("replica {} is not connected", name);
      report_.copies.push_back(std::move(check));
      return;
    }
    compare_twice(check, Sides{"in the mirror", "on replica " + name},
                  [this, &replica](bool second) -> Result<Round> {
                    auto copy = BKP_TRY(replica_manifest(*replica, second));
                    std::string behind =
                        copy.current ? "" : "its stream of the volume is still catching up";
                    return Round{BKP_TRY(mirror_manifest()), std::move(copy.manifest),
                                 std::move(behind)};
                  });
  }

  // Compares the manifests fetch gives. What differs on entries unchanged on the reference side
  // since the verify began is fetched and compared again (second = true), and kept only if it
  // differs both times; the rest is counted as changed during the verify (an entry changed
  // then is still changed in the second round, so that round could only count it again). A
  // copy still behind after the wait is not checked: what differs may be on its way.
  void compare_twice(CopyCheck check, const Sides& sides,
                     const std::function<Result<Round>(bool second)>& fetch) {
    auto verified = [&]() -> Result<void> {
      Round first = BKP_TRY(fetch(false));
      check.entries = first.reference.size();
      check.differences = settled(compare_manifests(first.reference, first.copy, sides),
                                  first.reference, since_ns_, check.changed);
      if (check.differences.empty()) return {};
      log::info("verify {}: {} {} at first, comparing again once the stream caught up",
                target_.volume->name(), check.name,
                counted(check.differences.size(), "difference", "differences"));
      Round second = BKP_TRY(fetch(true));
      auto again = compare_manifests(second.reference, second.copy, sides);
      size_t changed = 0;
      check.differences = settled(persisting(check.differences, again), second.reference,
                                  since_ns_, changed);
      check.changed += changed;
      if (!check.differences.empty() && !second.behind.empty()) {
        return fail(EAGAIN, fmt::format("{}: the {} seen may be changes on their way",
                                        second.behind,
                                        counted(check.differences.size(), "difference",
                                                "differences")));
      }
      return {};
    }();
    if (!verified) {
      check.error = verified.error().message;
      check.differences.clear();
    }
    report_.copies.push_back(std::move(check));
  }

  Result<changes::Manifest> node_manifest() {
    auto node = BKP_TRY(attach_node(target_.reg, target_.dialer, nullptr,
                                    wire::AttachPurpose::kManifest));
    auto manifest = stream::fetch_manifest(*node.conn, kManifestFrameTimeoutMs, flags_);
    return manifest.map_error([](Error e) { return e.wrap("node manifest"); });
  }

  Result<changes::Manifest> mirror_manifest() {
    const changes::Applier& applier = *target_.volume->applier;
    auto manifest = stream::walk_manifest(applier.tree_fd(), flags_, &applier.placeholders());
    return manifest.map_error([](Error e) { return e.wrap("mirror"); });
  }

  Result<AskedManifest> replica_manifest(Replica& replica, bool when_current) {
    return await(replica, replica.asks().post(target_.volume->name(), flags_, when_current));
  }

  // The session's answer to an ask just posted (manifest_asks.h), kAskWait at most.
  Result<AskedManifest> await(Replica& replica, std::future<Result<AskedManifest>> answer) {
    replica.notifier()->notify();
    const auto deadline = Clock::now() + kAskWait;
    while (answer.wait_for(kCatchUpPoll) != std::future_status::ready) {
      if (stopping_) return fail(ECANCELED, "backupd is stopping");
      if (!replica.connected()) {  // left before its session took the ask
        return fail(ECONNRESET, fmt::format("replica {} disconnected", replica.name()));
      }
      if (Clock::now() >= deadline) {
        return fail(ETIMEDOUT, fmt::format("replica {} did not answer within {} min",
                                           replica.name(), kAskWait.count()));
      }
    }
    return answer.get();
  }

  // Until a NodeStatus received from now on shows nothing unacknowledged, kCatchUpWait at most.
  // Returns "" then, else why the mirror may still lack changes.
  std::string wait_node_caught_up() {
    const int64_t since = wall_ms();
    const auto deadline = Clock::now() + kCatchUpWait;
    std::optional<NodeStatusSample> sample;
    while (!stopping_ && Clock::now() < deadline) {
      sample = target_.volume->node_status();
      if (sample && sample->received_ms > since && sample->status.pending_ops == 0 &&
          sample->status.pending_bytes == 0) {
        return "";
      }
      std::this_thread::sleep_for(kCatchUpPoll);
    }
    if (!sample || sample->received_ms <= since) {
      return "the node reported nothing for " + std::to_string(kCatchUpWait.count()) +
             " s (its link is down, or it sends no NodeStatus)";
    }
    return fmt::format("the node still had {} operations and {} bytes to deliver after {} s",
                       sample->status.pending_ops, sample->status.pending_bytes,
                       kCatchUpWait.count());
  }

  void check_snapshots() {
    const std::string& host = target_.reg.host;
    const std::string& path = target_.reg.path;
    auto snaps = registry_.present_snapshots(host, path);
    if (!snaps) {
      report_.copies.push_back(CopyCheck{.kind = CopyCheck::Kind::kSnapshot,
                                         .name = "snapshots",
                                         .error = snaps.error().message});
      return;
    }
    if (report_.options.replicas) {
      for (const auto& name : target_.replicas) check_snapshot_copies(name, *snaps);
    }
    auto store = registry_.hub().archives(host, path);
    for (const auto& s : *snaps) {
      if (stopping_) break;
      auto source = store->open(s.id, ArchivePart::kArchive);
      auto checked = source.and_then([&](auto& opened) { return check_snapshot(*opened, s); });
      if (!checked && checked.error().code == ENOENT) continue;  // rotated away meanwhile
      CopyCheck check{.kind = CopyCheck::Kind::kSnapshot, .name = s.id};
      if (checked) {
        check.entries = checked->entries;
        check.differences = std::move(checked->differences);
      } else {
        check.error = checked.error().message;
      }
      report_.copies.push_back(std::move(check));
    }
  }

  // The snapshot copies the catalog says a replica stored are in its inventory. Their bytes are
  // not read here: the replicator checked every part as it stored the copy, and a restore from
  // it checks them again.
  void check_snapshot_copies(const std::string& name, const std::vector<SnapshotRecord>& snaps) {
    CopyCheck check{.kind = CopyCheck::Kind::kSnapshotCopies, .name = name};
    std::shared_ptr<Replica> replica = registry_.hub().find_replica(name);
    auto held = replica && replica->connected()
                    ? await(*replica, replica->asks().post_snapshots(target_.volume->name()))
                    : fail(ENOTCONN, fmt::format("replica {} is not connected", name));
    if (held) {
      check.entries = held->snapshots.size();
      const std::set<std::string> ids(held->snapshots.begin(), held->snapshots.end());
      for (const auto& s : snaps) {
        const bool stored = std::find(s.copies.begin(), s.copies.end(), name) != s.copies.end();
        if (stored && !ids.contains(s.id)) {
          check.differences.push_back(
              {s.id + ".tgz", "missing",
               fmt::format("stored on replica {} by the catalog, not in its inventory", name)});
        }
      }
    } else {
      check.error = held.error().message;
    }
    report_.copies.push_back(std::move(check));
  }

  void finish() {
    VerifyRecord& r = report_.record;
    r.ended_at = wall_ms();
    std::vector<std::string> checked{"node"};
    if (report_.options.replicas) checked.emplace_back("replicas");
    if (report_.options.snapshots) checked.emplace_back("snapshots");
    if (report_.options.read_data) checked.emplace_back("data");
    r.checked = fmt::format("{}", fmt::join(checked, ", "));
    std::vector<std::string> notes;
    bool failed = false;
    for (const auto& c : report_.copies) {
      std::string who = c.kind == CopyCheck::Kind::kMirror
                            ? c.name
                            : fmt::format("{} {}", copy_kind_name(c.kind), c.name);
      r.differences += static_cast<int64_t>(c.differences.size());
      if (!c.error.empty()) {
        failed = true;
        notes.push_back(fmt::format("{}: not checked: {}", who, c.error));
      } else if (!c.differences.empty()) {
        notes.push_back(fmt::format(
            "{}: {}", who, counted(c.differences.size(), "difference", "differences")));
      }
    }
    r.result = r.differences > 0 ? VerifyResult::kDiffers
                                 : failed ? VerifyResult::kFailed : VerifyResult::kClean;
    r.summary = notes.empty() ? fmt::format("{} checked, no difference",
                                            counted(report_.copies.size(), "copy", "copies"))
                              : fmt::format("{}", fmt::join(notes, "; "));
    const std::string name = target_.reg.key();
    log::info("verify {}: {} ({}) in {} ms: {}", name, verify_result_name(r.result), r.checked,
              r.ended_at - r.started_at, r.summary);
    if (auto stored = registry_.catalog().record_verify(r); !stored) {
      log::error("verify {}: not recorded in the catalog: {}", name, stored.error().message);
    }
  }

  const VerifyTarget& target_;
  Registry& registry_;
  const std::atomic<bool>& stopping_;
  const uint8_t flags_;
  int64_t since_ns_ = 0;  // entries changed since then may be in flight (settled())
  VerifyReport report_;
};

}  // namespace

const char* copy_kind_name(CopyCheck::Kind kind) {
  switch (kind) {
    case CopyCheck::Kind::kMirror: return "mirror";
    case CopyCheck::Kind::kReplica: return "replica";
    case CopyCheck::Kind::kSnapshot: return "snapshot";
    case CopyCheck::Kind::kSnapshotCopies: return "snapshot copies";
  }
  return "mirror";
}

VerifyReport verify_volume(const VerifyTarget& target, Registry& registry,
                           const VerifyOptions& options, const std::atomic<bool>& stopping) {
  return Verifier(target, registry, options, stopping).run();
}

}  // namespace bkp::server
