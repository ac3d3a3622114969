// Placement of replica copies (placement.h): the score, and the Placer that applies it.
#include "server/placement.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <map>
#include <tuple>

#include "common/clock.h"
#include "common/files.h"
#include "common/log.h"

namespace bkp::server {
namespace {

std::string names(const std::set<std::string>& replicas) {
  return replicas.empty() ? "no replica" : fmt::format("{}", fmt::join(replicas, ", "));
}

}  // namespace

std::vector<Scored> rank(const std::vector<Candidate>& candidates, uint64_t needed_bytes) {
  std::vector<const Candidate*> roomy;
  double max_rtt = 0, max_stored = 0;
  for (const auto& c : candidates) {
    if (c.free_bytes < needed_bytes || c.free_bytes - needed_bytes < kMinFreeBytes) continue;
    roomy.push_back(&c);
    max_rtt = std::max(max_rtt, c.rtt_ms);
    max_stored = std::max(max_stored, static_cast<double>(c.stored_bytes));
  }
  std::vector<Scored> out;
  for (const Candidate* c : roomy) {
    double latency = max_rtt > 0 ? c->rtt_ms / max_rtt : 0;
    double bytes = max_stored > 0 ? static_cast<double>(c->stored_bytes) / max_stored : 0;
    out.push_back(Scored{c->name, 0.5 * latency + 0.5 * bytes});
  }
  std::sort(out.begin(), out.end(), [](const Scored& a, const Scored& b) {
    return std::tie(a.score, a.name) < std::tie(b.score, b.name);
  });
  return out;
}

Placer::~Placer() { stop(); }

Result<void> Placer::load() {
  auto all = BKP_TRY(catalog_.placements());
  for (const auto& [key, replicas] : all) hub_.set_placement(key, replicas);
  return {};
}

void Placer::start() {
  std::lock_guard lock(thread_mu_);
  if (thread_.joinable() || stopping_) return;
  thread_ = std::thread([this] { loop(); });
}

void Placer::stop() {
  {
    std::lock_guard lock(thread_mu_);
    stopping_ = true;
  }
  hub_.replica_events().notify();
  if (thread_.joinable()) thread_.join();
}

void Placer::loop() {
  auto stopping = [this] {
    std::lock_guard lock(thread_mu_);
    return stopping_;
  };
  while (!stopping()) {
    hub_.replica_events().wait(std::chrono::duration_cast<std::chrono::milliseconds>(kPlaceEvery));
    if (stopping()) return;
    auto regs = catalog_.registrations();
    if (!regs) {
      log::warn("placement: {}", regs.error().message);
      continue;
    }
    for (const auto& reg : *regs) {
      if (auto placed = place(reg); !placed) {
        log::warn("volume {}: placing its copies: {}", reg.key(), placed.error().message);
      }
    }
  }
}

uint64_t Placer::needed_bytes(const Registration& reg, int64_t now_ms) {
  auto& [at_ms, bytes] = needed_[reg.key()];
  if (at_ms == 0 || now_ms - at_ms > kNeededBytesFor) {
    bytes = allocated_bytes(hub_.volume_dir(reg.host, reg.path) + "/mirror").value_or(0);
    at_ms = now_ms;
  }
  return bytes;
}

std::vector<Candidate> Placer::candidates() {
  std::vector<Candidate> out;
  for (const auto& r : hub_.replicas()) {
    if (!r.connected || !r.usage.measured) continue;
    out.push_back(Candidate{r.name, r.usage.rtt_ms, r.usage.stored_bytes, r.usage.free_bytes});
  }
  return out;
}

Result<std::set<std::string>> Placer::place(const Registration& reg) {
  std::lock_guard lock(mu_);
  const std::string key = reg.key();
  const size_t want = static_cast<size_t>(wanted(reg) - 1);
  const std::set<std::string> placed = hub_.placement(key);
  // The placed replicators away past the grace period count as lacking.
  const int64_t now = wall_ms();
  std::map<std::string, int64_t> away_since;
  for (const auto& r : hub_.replicas()) away_since[r.name] = r.away_since_ms;
  std::set<std::string> present, gone;
  for (const auto& name : placed) {
    auto it = away_since.find(name);
    const int64_t since = it == away_since.end() ? hub_.started_ms() : it->second;
    (since != 0 && now - since > grace_ms_ ? gone : present).insert(name);
  }
  std::set<std::string> next = present;
  if (present.size() < want) {
    std::vector<Candidate> others = candidates();
    std::erase_if(others, [&](const Candidate& c) { return placed.contains(c.name); });
    if (!others.empty()) {
      for (const auto& s : rank(others, needed_bytes(reg, now))) {
        if (next.size() >= want) break;
        next.insert(s.name);
      }
    }
  } else if (present.size() > want) {
    // Keep the best `want`: current copies before the others, then by score (one that is not
    // a candidate now, being away or unmeasured, counts as the worst).
    std::map<std::string, double> score;
    for (const auto& s : rank(candidates(), 0)) score[s.name] = s.score;
    std::map<std::string, bool> current;
    for (const auto& r : hub_.replica_lags(key)) {
      current[r.lag.replica] = r.state == CopyState::kCurrent;
    }
    std::vector<std::string> order(present.begin(), present.end());
    auto rank_of = [&](const std::string& name) {
      auto s = score.find(name);
      return std::tuple(!current[name], s == score.end() ? INFINITY : s->second, name);
    };
    std::sort(order.begin(), order.end(),
              [&](const std::string& a, const std::string& b) { return rank_of(a) < rank_of(b); });
    next = std::set<std::string>(order.begin(), order.begin() + static_cast<ptrdiff_t>(want));
  }
  // A copy away past the grace period goes only once the copies wanted are current without it.
  if (!gone.empty()) {
    size_t current = 0;
    for (const auto& r : hub_.replica_lags(key)) {
      current += next.contains(r.lag.replica) && r.state == CopyState::kCurrent;
    }
    if (current < want) next.insert(gone.begin(), gone.end());
  }
  if (next == placed) return placed;
  BKP_TRY_VOID(catalog_.set_placement(reg.host, reg.path, next, wall_ms()));
  hub_.set_placement(key, next);
  std::set<std::string> added, dropped;
  std::set_difference(next.begin(), next.end(), placed.begin(), placed.end(),
                      std::inserter(added, added.end()));
  std::set_difference(placed.begin(), placed.end(), next.begin(), next.end(),
                      std::inserter(dropped, dropped.end()));
  for (const auto& r : dropped) {  // its stream is gone: now it may delete the copy
    BKP_TRY_VOID(drops_.queue_one(r, reg.host, reg.path, Purge::kYes));
  }
  std::string why;
  if (!added.empty()) why += fmt::format("; placed on {}", names(added));
  if (!dropped.empty()) why += fmt::format("; no longer on {}", names(dropped));
  if (!gone.empty()) {
    why += fmt::format(" ({} away longer than {} s)", names(gone), grace_ms_ / 1000);
  }
  if (next.size() - std::min(next.size(), gone.size()) < want) {
    why += "; short of copies: no other connected replicator with room";
  }
  log::info("volume {}: replica copies on {} (wants {} copies with the mirror){}", key,
            names(next), want + 1, why);
  return next;
}

void Placer::forget(const std::string& key) {
  std::lock_guard lock(mu_);
  needed_.erase(key);
  hub_.set_placement(key, {});
}

}  // namespace bkp::server
