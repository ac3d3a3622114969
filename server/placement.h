// Placement: which replicators hold a volume's copies.
//
// A volume wants N copies (`register --copies N`, default `copies` in backupd.toml, 3): the
// mirror on backupd is one, and N-1 replicators hold the others. Each replica copy goes to the
// connected replicator with the lowest score
//
//     score = 0.5 * rtt / max_rtt  +  0.5 * stored / max_stored
//
// where rtt is the smoothed round trip of the replicator's Usage answers (hub.h), stored the
// bytes it reports holding, and the maxima are taken over the candidates (a term whose maximum
// is 0 counts 0). So a near, empty replicator is best, and latency and fullness weigh the same
// whatever their units. Equal scores go to the smaller name. Never chosen: a replicator that has
// not reported its usage yet, one already holding a copy of the volume, and one without room —
// its free bytes below the volume's size (the mirror's allocated bytes) plus kMinFreeBytes.
//
// A replicator that loses a copy (moved, or fewer copies wanted) is told to delete it
// (server/drops.h: a durable drop with purge, delivered when it is connected), after its stream
// of the volume is gone.
//
// Placement is sticky: a copy stays where it was put while that replicator is away (its stream
// keeps the changes it lacks), so a restart of either side moves nothing — up to the grace
// period (backupd.toml `replica_grace_seconds`, default 10 minutes). A replicator away longer
// (or never seen since backupd started, for that long) no longer counts: its copy is placed
// anew on the best other candidate, which is filled from the mirror while the volume keeps
// streaming, and the away one is dropped from the placement only once the copies wanted are
// current without it. If it returns before that, it simply counts again (and the surplus is
// trimmed as below). Copies are placed at register time, when `set --copies` raises the count
// (lowering it drops the worst-scoring copies, the ones not current first), and whenever a
// volume has fewer placed copies than it wants and a replicator becomes available: the
// Placer's thread looks at every registration when the Hub reports a replica event and every
// kPlaceEvery.
//
// Thread-safety: every method is safe from any thread; one mutex serialises placements.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/result.h"
#include "server/catalog.h"
#include "server/drops.h"
#include "server/hub.h"

namespace bkp::server {

constexpr uint64_t kMinFreeBytes = uint64_t{64} << 20;
constexpr auto kPlaceEvery = std::chrono::seconds(5);
constexpr int kDefaultCopies = 3;
constexpr int kMaxCopies = 16;
constexpr int64_t kDefaultReplicaGraceSeconds = 600;
constexpr int64_t kNeededBytesFor = 600000;  // ms a mirror's measured size is reused

// One replicator that could take a copy.
struct Candidate {
  std::string name;
  double rtt_ms = 0;
  uint64_t stored_bytes = 0;
  uint64_t free_bytes = 0;
};

// The candidates with room for needed_bytes, scored as above (lower is better) and sorted best
// first (ties by name).
struct Scored {
  std::string name;
  double score = 0;
};
std::vector<Scored> rank(const std::vector<Candidate>& candidates, uint64_t needed_bytes);

class Placer {
 public:
  // default_copies: the copies of a registration that names none (its `copies` is 0);
  // grace_seconds: how long a placed replicator may be away before its copy moves.
  // drops: where a replica that loses a copy is told to delete it.
  Placer(Catalog& catalog, Hub& hub, DropQueue& drops, int default_copies,
         int64_t grace_seconds = kDefaultReplicaGraceSeconds)
      : catalog_(catalog), hub_(hub), drops_(drops), default_copies_(default_copies),
        grace_ms_(grace_seconds * 1000) {}
  ~Placer();  // stop()
  Placer(const Placer&) = delete;
  Placer& operator=(const Placer&) = delete;

  // Gives the Hub every stored placement (before replicas are admitted).
  Result<void> load();
  // Starts the thread that fills volumes lacking copies; stop() ends it (idempotent).
  void start();
  void stop();

  int wanted(const Registration& reg) const { return reg.copies > 0 ? reg.copies : default_copies_; }
  // Places the replica copies reg lacks (counting a replicator away past the grace period as
  // lacking) on the best candidates now, drops the worst ones it has beyond what it wants, and
  // drops those away past the grace period once enough others are current. Returns the
  // replicas it is placed on.
  Result<std::set<std::string>> place(const Registration& reg);
  // The volume (Registration::key()) is unregistered: its copies are placed nowhere (the
  // catalog's rows went with the registration).
  void forget(const std::string& key);

 private:
  void loop();
  // The connected replicators with their usage, as candidates (not yet measured: left out).
  std::vector<Candidate> candidates();
  // The room a copy of reg needs: the mirror's allocated bytes (nothing yet for a new volume),
  // walked at most every kNeededBytesFor per volume, since a volume short of copies is looked
  // at every kPlaceEvery (mu_ held).
  uint64_t needed_bytes(const Registration& reg, int64_t now_ms);

  Catalog& catalog_;
  Hub& hub_;
  DropQueue& drops_;
  const int default_copies_;
  const int64_t grace_ms_;
  std::mutex mu_;  // one placement at a time
  std::map<std::string, std::pair<int64_t, uint64_t>> needed_;  // by key: when walked, bytes
  std::mutex thread_mu_;
  // Guarded by thread_mu_.
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace bkp::server
