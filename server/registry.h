// Registry: the registered volumes — what `bkptool register/unregister/list/status` change and
// show — and, for each, its link to the node and its place in the scheduler.
//
// A registration is stored only after the node has been reached and has confirmed it serves
// the path (so a typo never leaves a volume retrying forever), and its live connection is handed
// straight to the new link, so the baseline starts before `register` returns. At startup every
// stored registration gets its link (which connects in the background) and its schedule.
//
// Recovery (before start()): runs left open by a killed backupd are closed as failed
// "interrupted (backupd stopped during the run)"; in every volume directory, partial ".tmp-*"
// snapshots are deleted, catalog rows whose file is gone are marked deleted, and snapshot
// files the catalog does not know (written just before a crash) are adopted.
//
// Thread-safety: every method is safe from any thread (control sessions call them
// concurrently). Lock order: Registry::mu_ -> Scheduler's mutex (when a volume is scheduled);
// it is never held while calling the catalog, the hub, or a link's stop().
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "server/catalog.h"
#include "server/hub.h"
#include "server/link.h"
#include "server/scheduler.h"

namespace bkp::server {

// Control protocol error codes (docs/PROTOCOL.md "Control").
enum class Fault { kBadRequest, kUnknownVolume, kDuplicate, kNodeUnreachable, kWrongPath, kNoSnapshot, kInternal };
const char* fault_code(Fault fault);  // "bad_request", "unknown_volume", ...

struct ControlError {
  Fault fault = Fault::kInternal;
  std::string message;  // one sentence for a human
};

template <class T>
using ControlResult = tl::expected<T, ControlError>;

inline tl::unexpected<ControlError> control_fail(Fault fault, std::string message) {
  return tl::unexpected(ControlError{fault, std::move(message)});
}

// What `list` shows of one registered volume.
struct VolumeView {
  Registration reg;
  LinkStatus link;
  std::optional<NodeStatusSample> node_status;
  std::optional<RunRecord> last_run;
  std::optional<int64_t> next_run;
};

// What `status` shows of one registered volume: the list view plus what moves right now. Read
// without taking the volume's mutex, so it answers while a snapshot run holds the volume.
struct StatusView {
  VolumeView volume;
  progress::View ingest;             // the node's stream into the mirror (active or the last)
  std::vector<ReplicaLag> replicas;  // by replica name
};

class Registry {
 public:
  Registry(Hub& hub, Catalog& catalog, Scheduler& scheduler, uint64_t server_id)
      : hub_(hub), catalog_(catalog), scheduler_(scheduler), server_id_(server_id) {}
  ~Registry();  // stop()
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Startup recovery (see above). Errors are logged; only an unusable catalog fails.
  Result<void> recover();
  // Starts a link and a schedule for every stored registration.
  Result<void> start();
  // Stops every link (the scheduler is stopped by its owner first). Idempotent.
  void stop();

  ControlResult<VolumeView> register_volume(const std::string& host, int64_t port,
                                            const std::string& path, int64_t every_seconds);
  // Returns whether the volume's data was purged.
  ControlResult<bool> unregister(const std::string& host, const std::string& path, bool purge);
  ControlResult<std::vector<VolumeView>> list();
  // Status of every registered volume, by key.
  std::vector<StatusView> status();
  // Status of one: bad_request for an invalid host or path, unknown_volume if not registered
  // (history kept after unregister does not count: nothing moves for it).
  ControlResult<StatusView> status(const std::string& host, const std::string& path);
  // ok if the volume is registered or still has history or snapshots; bad_request for an
  // invalid host or path, unknown_volume otherwise.
  ControlResult<void> check_known(const std::string& host, const std::string& path);

  Hub& hub() { return hub_; }
  Catalog& catalog() { return catalog_; }

 private:
  struct Entry {
    Registration reg;
    std::shared_ptr<Volume> volume;
    std::shared_ptr<Link> link;
  };

  // Marks a key busy (the caller inserted it into busy_ under mu_) until destroyed.
  struct BusyKey {
    Registry& r;
    std::string key;
    ~BusyKey() {
      std::lock_guard lock(r.mu_);
      r.busy_.erase(key);
    }
  };

  ControlResult<void> validate(const std::string& host, const std::string& path);
  void start_volume(const Registration& reg, std::shared_ptr<Volume> volume,
                    std::optional<AttachedNode> first, int64_t first_run_ms);
  ControlResult<void> purge(const std::string& host, const std::string& path);
  std::vector<Entry> entries();  // a copy, taken under mu_
  VolumeView view(const Entry& e);
  StatusView status_view(const Entry& e);
  void reconcile_snapshots(Volume& v);

  Hub& hub_;
  Catalog& catalog_;
  Scheduler& scheduler_;
  const uint64_t server_id_;

  std::mutex mu_;
  // Guarded by mu_.
  bool stopping_ = false;
  std::map<std::string, Entry> entries_;  // by Registration::key()
  std::set<std::string> busy_;            // keys being registered or unregistered right now
  std::set<int> attaching_;               // sockets of register calls waiting for a node
};

}  // namespace bkp::server
