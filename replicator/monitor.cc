// The replicator's /metrics and stats.json content (monitor.h).
//
// The counters run since the process started; totals since install are StatsFile's (the
// previous file's figures plus these). Where a tree stands (its committed batch, and when) comes
// from disk as the tree is opened, so a restarted replicator shows its last commit again as soon
// as backupd selects the volume, before anything new arrives. Bytes stored are the filesystem's
// (statvfs of ROOT at each scrape), not the volume's: a per-volume figure would need a walk of
// the tree or bookkeeping of every overwrite, truncate and unlink, and it is the filesystem that
// runs out.
#include "replicator/monitor.h"

#include <cstdlib>

#include "common/clock.h"
#include "common/log.h"
#include "common/metrics.h"

namespace bkp::replicator {
namespace {

using json = nlohmann::json;

// What a tree received since start, as stats.json counts it (summed into the totals).
json tree_totals(const TreeCounters& t) {
  return json{{"applied_bytes", t.data_bytes()},
              {"operations", t.ops()},
              {"batches", t.batches()},
              {"reconciles", t.reconciles()}};
}

}  // namespace

void TreeCounters::opened(uint64_t committed, int64_t commit_ms) {
  committed_.store(committed, std::memory_order_relaxed);
  last_commit_ms_.store(commit_ms, std::memory_order_relaxed);
}

void TreeCounters::committed(uint64_t batch, int64_t now_ms) {
  batches_.fetch_add(1, std::memory_order_relaxed);
  committed_.store(batch, std::memory_order_relaxed);
  last_commit_ms_.store(now_ms, std::memory_order_relaxed);
}

Monitor::Monitor(std::string root, const std::vector<std::string>& servers)
    : root_(std::move(root)) {
  for (const std::string& s : servers) links_[s] = std::make_unique<Link>();
}

Monitor::Link& Monitor::link(const std::string& server) {
  auto it = links_.find(server);
  if (it == links_.end()) {
    log::error("internal error: no link to {} in the monitor", server);
    std::abort();
  }
  return *it->second;
}

TreeCounters& Monitor::tree(const std::string& host, const std::string& path) {
  std::lock_guard lock(mu_);
  auto& slot = trees_[{host, path}];
  if (!slot) slot = std::make_unique<TreeCounters>();
  return *slot;
}

void Monitor::session_started(const std::string& server) {
  Link& l = link(server);
  l.sessions.fetch_add(1, std::memory_order_relaxed);
  l.up.store(true, std::memory_order_relaxed);
}

void Monitor::session_ended(const std::string& server) {
  link(server).up.store(false, std::memory_order_relaxed);
}

void Monitor::connect_failed(const std::string& server) {
  link(server).connect_failures.fetch_add(1, std::memory_order_relaxed);
}

std::string Monitor::metrics_text() const {
  metrics::Exposition m;
  for (const auto& [server, l] : links_) {
    const metrics::Labels at{{"server", server}};
    m.gauge("replicator_backupd_up", "1 while a session with that backupd runs.", at,
            l->up.load(std::memory_order_relaxed));
    m.counter("replicator_backupd_sessions_total",
              "Sessions that backupd welcomed since the replicator started (1 + reconnects).", at,
              static_cast<double>(l->sessions.load(std::memory_order_relaxed)));
    m.counter("replicator_backupd_connect_failures_total",
              "Connections to that backupd that ended before a session began (unreachable, "
              "refused, TLS or identity rejected).",
              at, static_cast<double>(l->connect_failures.load(std::memory_order_relaxed)));
  }
  {
    std::lock_guard lock(mu_);
    m.gauge("replicator_volumes", "Volumes backupd selected since the replicator started.", {},
            static_cast<double>(trees_.size()));
    for (const auto& [key, t] : trees_) {
      const metrics::Labels vol{{"host", key.first}, {"path", key.second}};
      m.counter("replicator_volume_applied_bytes_total",
                "File data written into the replica since the replicator started.", vol,
                static_cast<double>(t->data_bytes()));
      m.counter("replicator_volume_applied_operations_total",
                "Operations applied to the replica since the replicator started.", vol,
                static_cast<double>(t->ops()));
      m.counter("replicator_volume_batches_total",
                "Batches made durable and acknowledged since the replicator started.", vol,
                static_cast<double>(t->batches()));
      m.counter("replicator_volume_reconciles_total",
                "Reconciles (baselines by manifest) backupd began since the replicator started.",
                vol, static_cast<double>(t->reconciles()));
      m.gauge("replicator_volume_committed_batch",
              "The replica's position: the last batch of backupd's stream made durable (a new "
              "stream numbers from 1 again).",
              vol, static_cast<double>(t->committed_batch()));
      if (int64_t at = t->last_commit_ms(); at > 0) {
        m.gauge("replicator_volume_last_commit_timestamp_seconds",
                "When the replica last made a batch durable.", vol, static_cast<double>(at) / 1e3);
      }
    }
  }
  metrics::add_filesystem_metrics(m, "replicator", root_, "--root");
  metrics::add_process_metrics(m);
  return m.text();
}

std::pair<json, json> Monitor::stats() const {
  uint64_t sessions = 0, connect_failures = 0;
  bool any_up = false;
  json servers = json::object();
  for (const auto& [server, l] : links_) {
    sessions += l->sessions.load(std::memory_order_relaxed);
    connect_failures += l->connect_failures.load(std::memory_order_relaxed);
    const bool up = l->up.load(std::memory_order_relaxed);
    any_up = any_up || up;
    servers[server] = json{{"connected", up}};
  }
  json since_start{{"applied_bytes", 0}, {"operations", 0}, {"batches", 0}, {"reconciles", 0},
                   {"sessions", sessions}, {"connect_failures", connect_failures}};
  json volumes = json::object(), positions = json::object();
  {
    std::lock_guard lock(mu_);
    for (const auto& [key, t] : trees_) {
      const std::string name = key.first + ":" + key.second;
      json totals = tree_totals(*t);
      for (const auto& [k, v] : totals.items()) {
        since_start[k] = since_start[k].get<uint64_t>() + v.get<uint64_t>();
      }
      volumes[name] = std::move(totals);
      const int64_t at = t->last_commit_ms();
      positions[name] = json{{"committed_batch", t->committed_batch()},
                             {"last_commit_at", at > 0 ? json(iso_time(at)) : json(nullptr)}};
    }
  }
  since_start["volumes"] = std::move(volumes);
  return {std::move(since_start),
          json{{"backupd_connected", any_up},
               {"servers", std::move(servers)},
               {"volumes", std::move(positions)}}};
}

}  // namespace bkp::replicator
