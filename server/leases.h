// LeaseKeeper: which volumes this backupd serves when several share one catalog (issue 16,
// item 2; `catalog = "postgresql://..."` and `server_name` in backupd.toml).
//
// Each volume is served by one server at a time, the holder of its lease in the catalog
// (Catalog::take_lease). Every round (a third of the lease time) the keeper marks this server
// alive, renews the leases it holds, and compares each volume's owner with where it belongs
// among the live servers (server/owners.h, rendezvous hashing):
//   - a lease it no longer holds (it could not renew in time and another server took the
//     volume) stops being served here at once (lost);
//   - a volume it holds that belongs on another live server is given up: served here no more,
//     then released, so the other takes it at its next round (a server joining takes only the
//     volumes it wins);
//   - a volume nobody holds (never leased, given up, or its server stopped renewing: its lease
//     expired) that belongs here is taken and served (gained).
// So when a server dies, its volumes are served again by the others within one lease time plus
// one round, each by the server it hashes to among those left. A server paused longer than its
// lease (SIGSTOP, a hung disk) finds at its next round that it lost its leases and stops
// serving them; what it did meanwhile is what any server without a lease does: the node accepts
// one backupd session at a time, and no run starts once its lease time is over by the server's
// own clock (serves()). Server clocks are assumed to agree within a fraction of the lease time.
//
// Thread-safety: every method may be called from any thread; rounds and claims are serialized.
// gained/lost are called from a round, one at a time, with the round's lock held: they must not
// call back into the keeper (serves() and owners() excepted, which take no round lock).
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "server/catalog.h"

namespace bkp::server {

struct LeaseSettings {
  std::string me;                       // this server's name (server_name), unique per catalog
  std::chrono::milliseconds ttl{30000};  // lease_seconds
};

class LeaseKeeper {
 public:
  // A volume by its key ("host:/path").
  using OnVolume = std::function<void(const std::string& host, const std::string& path)>;
  LeaseKeeper(Catalog& catalog, LeaseSettings settings, OnVolume gained, OnVolume lost);
  ~LeaseKeeper();  // stop()

  // A first round now, then one every ttl/3 on the keeper's thread.
  void start();
  // Ends the thread. The leases are left to expire (a restart within the lease time takes them
  // back at once, with no other server starting meanwhile).
  void stop();
  // One round (see above).
  void round();
  // A volume just registered here: takes its lease and serves it now if it belongs here; false
  // if it belongs on another live server, which takes it at its next round.
  bool claim(const std::string& host, const std::string& path);
  // Whether this server serves the volume now: it holds the lease and, by its own clock, the
  // lease has not expired since it was last renewed.
  bool serves(const std::string& key);
  // Who serves each registered volume ("" nobody right now), as the catalog says.
  std::map<std::string, std::string> owners();
  const std::string& me() const { return settings_.me; }

 private:
  // The live servers, this one always among them.
  std::vector<std::string> live(int64_t now);
  void gain(const std::string& key);  // round_mu_ held
  void lose(const std::string& key);  // round_mu_ held

  Catalog& catalog_;
  const LeaseSettings settings_;
  OnVolume gained_, lost_;
  std::mutex round_mu_;          // one round or claim at a time
  std::set<std::string> served_;  // guarded by round_mu_ and served_mu_ (reads take either)
  std::mutex served_mu_;
  int64_t valid_until_ = 0;  // when the leases renewed last expire; guarded by served_mu_
  std::mutex stop_mu_;
  std::condition_variable wake_;
  bool stopping_ = false;  // guarded by stop_mu_
  std::thread thread_;
};

}  // namespace bkp::server
