// The drop queue (see drops.h): the catalog is the record, the maps a copy of it that replica
// sessions read at every pass without a query. Every change is written to the catalog first,
// under the queue's mutex, so the copy never claims what the catalog does not hold.
#include "server/drops.h"

#include "common/clock.h"

namespace bkp::server {

Result<void> DropQueue::load() {
  auto names = BKP_TRY(catalog_.replica_names());
  auto drops = BKP_TRY(catalog_.drops());
  std::lock_guard lock(mu_);
  replicas_.insert(names.begin(), names.end());
  for (auto& d : drops) {
    pending_[d.replica][Key{d.host, d.path}] =
        PendingDrop{d.host, d.path, d.purge ? Purge::kYes : Purge::kNo, ""};
  }
  return {};
}

Result<void> DropQueue::note_replica(const std::string& name) {
  std::lock_guard lock(mu_);
  if (replicas_.contains(name)) return {};
  BKP_TRY_VOID(catalog_.add_replica(name, wall_ms()));
  replicas_.insert(name);
  return {};
}

Result<std::vector<std::string>> DropQueue::queue(const std::string& host, const std::string& path,
                                                  Purge purge) {
  std::lock_guard lock(mu_);
  std::vector<std::string> replicas(replicas_.begin(), replicas_.end());
  BKP_TRY_VOID(add(replicas, host, path, purge));
  return replicas;
}

Result<void> DropQueue::queue_one(const std::string& replica, const std::string& host,
                                  const std::string& path, Purge purge) {
  std::lock_guard lock(mu_);
  return add({replica}, host, path, purge);
}

Result<void> DropQueue::add(const std::vector<std::string>& replicas, const std::string& host,
                            const std::string& path, Purge purge) {
  BKP_TRY_VOID(catalog_.add_drops(replicas, host, path, purge == Purge::kYes, wall_ms()));
  for (const auto& r : replicas) {
    PendingDrop& d = pending_[r][Key{host, path}];
    d.host = host;
    d.path = path;
    if (purge == Purge::kYes) d.purge = Purge::kYes;
    d.error.clear();
  }
  return {};
}

std::vector<PendingDrop> DropQueue::pending(const std::string& replica) {
  std::lock_guard lock(mu_);
  std::vector<PendingDrop> out;
  auto it = pending_.find(replica);
  if (it == pending_.end()) return out;
  for (const auto& [key, d] : it->second) out.push_back(d);
  return out;
}

Result<void> DropQueue::done(const std::string& replica, const PendingDrop& drop) {
  std::lock_guard lock(mu_);
  BKP_TRY_VOID(catalog_.remove_drop(replica, drop.host, drop.path, drop.purge == Purge::kYes));
  auto it = pending_.find(replica);
  if (it != pending_.end()) {
    auto d = it->second.find(Key{drop.host, drop.path});
    if (d != it->second.end() && (d->second.purge == Purge::kNo || drop.purge == Purge::kYes)) {
      it->second.erase(d);
    }
    if (it->second.empty()) pending_.erase(it);
  }
  answered_.notify_all();
  return {};
}

void DropQueue::failed(const std::string& replica, const PendingDrop& drop, std::string error) {
  std::lock_guard lock(mu_);
  auto it = pending_.find(replica);
  if (it == pending_.end()) return;
  auto d = it->second.find(Key{drop.host, drop.path});
  if (d == it->second.end()) return;
  d->second.error = std::move(error);
  answered_.notify_all();
}

std::optional<PendingDrop> DropQueue::find(const std::string& replica, const Key& key) {
  auto it = pending_.find(replica);
  if (it == pending_.end()) return std::nullopt;
  auto d = it->second.find(key);
  if (d == it->second.end()) return std::nullopt;
  return d->second;
}

std::map<std::string, std::optional<PendingDrop>> DropQueue::wait(
    const std::string& host, const std::string& path, const std::set<std::string>& replicas,
    std::chrono::milliseconds timeout) {
  const Key key{host, path};
  std::unique_lock lock(mu_);
  auto all_answered = [&] {
    for (const auto& r : replicas) {
      auto d = find(r, key);
      if (d && d->error.empty()) return false;
    }
    return true;
  };
  answered_.wait_for(lock, timeout, all_answered);
  std::map<std::string, std::optional<PendingDrop>> out;
  for (const auto& r : replicas) out[r] = find(r, key);
  return out;
}

}  // namespace bkp::server
