// ForwardCache: a volume's incoming Write frames, kept as the node encoded them (zstd, or raw when
// the node found the chunk incompressible), so every replica session forwards those same bytes:
// data is compressed once, on the node, whatever the number of replicas, and backupd neither
// reads its mirror back nor runs zstd for a replica that keeps up.
//
// A chunk is found by (file id, offset, raw length): a replica's shipper asks for exactly the
// chunk it is about to send, and a hit is one copy into its send buffer. Anything else (a chunk
// evicted, a replica whose log coalesced ranges differently, a replica catching up from far
// behind) is a miss, and the shipper reads the mirror and encodes as before.
//
// Exactness. A kept chunk equals the mirror's bytes from its put until the next change of its
// range, which replaces or drops it in the same critical section (Volume::fan_out*), just after
// the mirror changed. So a hit is never older than the mirror was when the shipper took the
// file's source ctime (the Applier forgets that ctime before it changes any byte: shipper.h's
// "stat first, read after" still holds), and every later change is recorded into each replica's
// log after the cache moved, so a replica that forwards a chunk just overwritten gets the new
// bytes in a later batch, exactly as when it reads the mirror while a node writes it.
//
// Bounded memory (DESIGN.md invariant 4): at most max_bytes of chunk bodies per volume, and all
// volumes' caches together within one ForwardBudget (backupd.toml forward_cache_mib), so memory
// does not grow with the number of volumes. Each chunk expects one
// take per replica stream that existed when it was put and goes after the last. When full, a new
// chunk evicts only chunks older than kForwardStale (a replica that is away, or that will never ask in
// these pieces); otherwise it is not kept: the oldest chunks are the ones lagging replicas ask
// for next, so evicting them would turn one slow replica's lag into misses for every chunk.
//
// Thread-safety: all methods take the cache's own mutex, a leaf (taken under Volume::mu by the
// node session, without it by replica sessions).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <utility>
#include <vector>

#include "common/changes/applier.h"
#include "common/wire/messages.h"

namespace bkp::server {

constexpr size_t kForwardCacheBytes = 128u << 20;  // per volume with replicas
constexpr size_t kForwardBudgetBytes = 256u << 20;  // all volumes together, by default
constexpr std::chrono::milliseconds kForwardStale{5000};
constexpr std::chrono::milliseconds kShedEvery{250};

class ForwardCache;

// The bytes all ForwardCaches of one backupd may keep together. A cache that finds the budget
// spent first has every other cache drop its stale chunks (shed), then its own oldest stale
// ones; what still does not fit is not kept (the replicas read the mirror for it). Shedding
// takes each other cache's lock in turn, never while holding the asking cache's own.
class ForwardBudget {
 public:
  explicit ForwardBudget(size_t max_bytes) : max_bytes_(max_bytes) {}
  size_t max_bytes() const { return max_bytes_; }
  size_t used() const { return used_.load(); }

 private:
  friend class ForwardCache;
  bool reserve(size_t n);
  void release(size_t n) { used_.fetch_sub(n); }
  void enroll(ForwardCache* cache);
  void leave(ForwardCache* cache);
  void shed(const ForwardCache* except);

  const size_t max_bytes_;
  std::atomic<size_t> used_{0};
  // When the last shed began: a full budget sheds at most every kShedEvery, not at every put
  // (chunks become stale only after kForwardStale anyway).
  std::atomic<int64_t> last_shed_ns_{0};
  std::mutex mu_;                       // guards caches_; taken before any cache's own lock
  std::vector<ForwardCache*> caches_;
};

class ForwardCache {
 public:
  // stale: how long a chunk is safe from eviction by newer ones (0: not at all). budget: the
  // bound shared with the other volumes' caches (null: this cache's max_bytes alone).
  explicit ForwardCache(size_t max_bytes = kForwardCacheBytes,
                        std::chrono::milliseconds stale = kForwardStale,
                        std::shared_ptr<ForwardBudget> budget = nullptr);
  ~ForwardCache();
  ForwardCache(const ForwardCache&) = delete;
  ForwardCache& operator=(const ForwardCache&) = delete;

  // The node's Write of raw_length bytes at offset of file id was applied to the mirror: forget
  // every chunk of the file it overlaps, then keep this one (the frame's flags and the payload
  // after its header) for `readers` takes, if there is room.
  void put(uint64_t id, uint64_t offset, uint8_t flags, uint32_t raw_length,
           std::span<const uint8_t> body, unsigned readers);
  // The file's bytes changed otherwise (truncate, punch, create): forget all of its chunks.
  void drop_file(uint64_t id);
  // The chunk of exactly raw_length bytes at offset of file id, if kept; counts one take.
  std::shared_ptr<const wire::EncodedWrite> take(uint64_t id, uint64_t offset, uint32_t raw_length);

  struct Stats {
    uint64_t hit_bytes = 0;   // raw bytes forwarded from here
    uint64_t miss_bytes = 0;  // raw bytes asked for and not found
    size_t kept_bytes = 0;
  };
  Stats stats() const;

 private:
  using Clock = std::chrono::steady_clock;
  struct Entry {
    std::shared_ptr<const wire::EncodedWrite> chunk;
    unsigned readers = 0;  // takes still expected
    Clock::time_point put_at;
    uint64_t seq = 0;      // put order, for eviction
  };
  using Key = std::pair<uint64_t, uint64_t>;  // (id, offset)

  friend class ForwardBudget;
  void erase(std::map<Key, Entry>::iterator it);  // mu_ held
  // Evicts stale chunks, oldest first, until `need` more bytes fit here and in the budget;
  // false if they do not (then nothing of `need` is reserved).
  bool make_room(size_t need);  // mu_ held
  // Evicts the oldest chunk if it is stale; false if there is none.
  bool evict_oldest_stale();  // mu_ held
  void shed_stale();  // takes mu_: every stale chunk goes (ForwardBudget::shed)

  const size_t max_bytes_;
  const std::chrono::milliseconds stale_;
  const std::shared_ptr<ForwardBudget> budget_;
  mutable std::mutex mu_;
  // Guarded by mu_.
  std::map<Key, Entry> chunks_;
  std::map<uint64_t, Key> order_;  // seq -> key
  uint64_t next_seq_ = 0;
  Stats stats_;
};

// The mirror as a replica shipper reads it: chunks from the cache where it holds them.
class MirrorSource : public changes::ApplierSource {
 public:
  MirrorSource(changes::Applier& mirror, ForwardCache& cache)
      : ApplierSource(mirror), cache_(cache) {}
  std::shared_ptr<const wire::EncodedWrite> encoded(const changes::FileRef& file, uint64_t offset,
                                                    uint32_t length) override {
    return cache_.take(file.id, offset, length);
  }

 private:
  ForwardCache& cache_;
};

}  // namespace bkp::server
