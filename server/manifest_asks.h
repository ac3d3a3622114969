// ManifestAsks: a verify's questions to a replica, waiting for its session (server/verify.h):
// its manifest of a volume, or which snapshot copies of the volume it holds.
//
// A replica's connection belongs to its session thread, which ships batches on it; a verify
// must not write to it from another thread, nor wait for the stream to be quiet forever. So a
// verify posts an ask here (which volume, which manifest flags) and waits on its future; the
// session answers asks between batches (replica_session.cc), and fails them all when its
// connection ends, so no verify waits for a replica that left.
//
// Thread-safety: every method is safe from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "common/changes/scan.h"
#include "common/result.h"

namespace bkp::server {

// A replica's manifest, and whether its stream of the volume had nothing left to send when the
// replica walked its tree (false: the copy may lack changes still on their way); or, for an ask
// of its snapshots, the ids of the complete snapshot copies it holds.
struct AskedManifest {
  changes::Manifest manifest;
  bool current = false;
  std::vector<std::string> snapshots;
};

// One ask. Answered exactly once: by answer(), or, if it is dropped unanswered (its session
// failed half way), with ECONNRESET, so the verify waiting on it always gets a value.
class ManifestAsk {
 public:
  ManifestAsk(std::string volume, uint8_t flags, bool when_current, bool snapshots = false)
      : volume(std::move(volume)), flags(flags), when_current(when_current),
        snapshots(snapshots) {}
  ~ManifestAsk() {
    if (!answered_) answer(fail(ECONNRESET, "the replica session ended before answering"));
  }
  ManifestAsk(const ManifestAsk&) = delete;
  ManifestAsk& operator=(const ManifestAsk&) = delete;

  void answer(Result<AskedManifest> result) {
    answered_ = true;
    promise_.set_value(std::move(result));
  }
  std::future<Result<AskedManifest>> future() { return promise_.get_future(); }

  const std::string volume;  // the volume's name, "host:/path"
  const uint8_t flags;       // ManifestRequest flags (kManifestVerify is added by the session)
  // Answer only once the replica's stream of the volume has nothing to send, unless the ask is
  // older than ManifestAsks::kQuietWait (a volume never quiet is compared anyway).
  const bool when_current;
  const bool snapshots;  // asks for the snapshot inventory (SnapshotInventoryRequest) instead
  const std::chrono::steady_clock::time_point posted = std::chrono::steady_clock::now();

 private:
  std::promise<Result<AskedManifest>> promise_;
  bool answered_ = false;
};

class ManifestAsks {
 public:
  // How long an ask `when_current` waits for a quiet stream before it is answered anyway.
  static constexpr auto kQuietWait = std::chrono::seconds(10);

  std::future<Result<AskedManifest>> post(std::string volume, uint8_t flags, bool when_current);
  // The ids of the snapshot copies of the volume the replica holds (AskedManifest::snapshots).
  std::future<Result<AskedManifest>> post_snapshots(std::string volume);
  // Every ask posted and not answered; the caller answers each.
  std::vector<std::shared_ptr<ManifestAsk>> take();
  // Puts back asks the session could not answer yet.
  void put_back(std::vector<std::shared_ptr<ManifestAsk>> asks);
  // Answers every waiting ask with error (the session ended).
  void fail_all(const Error& error);

 private:
  std::future<Result<AskedManifest>> add(std::shared_ptr<ManifestAsk> ask);

  std::mutex mu_;
  std::vector<std::shared_ptr<ManifestAsk>> asks_;  // guarded by mu_
};

}  // namespace bkp::server
