// LeaseKeeper (see leases.h).
#include "server/leases.h"

#include <algorithm>

#include "common/clock.h"
#include "common/log.h"
#include "server/owners.h"

namespace bkp::server {
namespace {

// "host:/path" -> {host, path}; the host may hold ':' (an IPv6 literal), never ":/".
std::pair<std::string, std::string> split_key(const std::string& key) {
  size_t at = key.find(":/");
  return {key.substr(0, at), key.substr(at + 1)};
}

}  // namespace

LeaseKeeper::LeaseKeeper(Catalog& catalog, LeaseSettings settings, OnVolume gained, OnVolume lost)
    : catalog_(catalog), settings_(std::move(settings)), gained_(std::move(gained)),
      lost_(std::move(lost)) {}

LeaseKeeper::~LeaseKeeper() { stop(); }

void LeaseKeeper::start() {
  round();
  thread_ = std::thread([this] {
    std::unique_lock lock(stop_mu_);
    while (!wake_.wait_for(lock, settings_.ttl / 3, [this] { return stopping_; })) {
      lock.unlock();
      round();
      lock.lock();
    }
  });
}

void LeaseKeeper::stop() {
  {
    std::lock_guard lock(stop_mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::vector<std::string> LeaseKeeper::live(int64_t now) {
  auto servers = catalog_.live_servers(now - settings_.ttl.count());
  std::vector<std::string> out = servers ? *servers : std::vector<std::string>{};
  if (std::find(out.begin(), out.end(), settings_.me) == out.end()) out.push_back(settings_.me);
  return out;
}

void LeaseKeeper::gain(const std::string& key) {
  {
    std::lock_guard lock(served_mu_);
    served_.insert(key);
  }
  auto [host, path] = split_key(key);
  log::info("volume {}: served by this backupd ({}) now", key, settings_.me);
  gained_(host, path);
}

void LeaseKeeper::lose(const std::string& key) {
  {
    std::lock_guard lock(served_mu_);
    served_.erase(key);
  }
  auto [host, path] = split_key(key);
  lost_(host, path);
}

void LeaseKeeper::round() {
  std::lock_guard round_lock(round_mu_);
  const int64_t now = wall_ms();
  const int64_t until = now + settings_.ttl.count();
  if (auto beat = catalog_.heartbeat(settings_.me, now); !beat) {
    log::warn("leases: {}", beat.error().message);
  }
  auto held = catalog_.renew_leases(settings_.me, now, until);
  if (!held) {
    // The catalog is away: nothing is known, so nothing changes until it answers; leases of
    // other servers expire meanwhile too, and a server that kept its catalog takes them over.
    log::warn("leases: renewing: {}", held.error().message);
    return;
  }
  {
    std::lock_guard lock(served_mu_);
    valid_until_ = until;
  }
  for (const auto& key : std::set<std::string>(served_)) {
    if (!held->contains(key)) {
      log::warn("volume {}: its lease was taken by another backupd; not served here any more", key);
      lose(key);
    }
  }
  auto owners = catalog_.owners(now);
  if (!owners) {
    log::warn("leases: {}", owners.error().message);
    return;
  }
  const std::vector<std::string> servers = live(now);
  for (const auto& [key, owner] : *owners) {
    const std::string belongs = preferred_owner(key, servers);
    auto [host, path] = split_key(key);
    if (owner == settings_.me) {
      if (belongs != settings_.me) {
        log::info("volume {}: handed over to backupd {}, where it belongs now", key, belongs);
        if (served_.contains(key)) lose(key);
        if (auto released = catalog_.release_lease(host, path, settings_.me); !released) {
          log::warn("leases: {}", released.error().message);
        }
      } else if (!served_.contains(key)) {
        gain(key);  // ours since before a restart
      }
    } else if (owner.empty() && belongs == settings_.me) {
      auto taken = catalog_.take_lease(host, path, settings_.me, now, until);
      if (!taken) {
        log::warn("leases: {}", taken.error().message);
      } else if (*taken) {
        gain(key);
      }
    }
  }
}

bool LeaseKeeper::claim(const std::string& host, const std::string& path) {
  std::lock_guard round_lock(round_mu_);
  const int64_t now = wall_ms();
  const std::string key = host + ":" + path;
  if (preferred_owner(key, live(now)) != settings_.me) return false;
  auto taken = catalog_.take_lease(host, path, settings_.me, now, now + settings_.ttl.count());
  if (!taken || !*taken) return false;
  std::lock_guard lock(served_mu_);
  served_.insert(key);
  return true;
}

bool LeaseKeeper::serves(const std::string& key) {
  std::lock_guard lock(served_mu_);
  return served_.contains(key) && wall_ms() < valid_until_;
}

std::map<std::string, std::string> LeaseKeeper::owners() {
  auto owners = catalog_.owners(wall_ms());
  if (!owners) {
    log::warn("leases: {}", owners.error().message);
    return {};
  }
  return *owners;
}

}  // namespace bkp::server
