// Monitor: what the replicator has done since it started, per volume and for its link to each
// backupd it follows (--server, each named as given), for the two views an operator has of it:
// /metrics (--metrics-listen) and ROOT/.stats.json (common/stats_file.h). The session threads
// count; the HTTP threads and the thread that writes the stats file read, at any time, without
// waiting for a session.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace bkp::replicator {

// One volume's replica (a Tree) as the monitor counts it. Written by the session that holds the
// tree (one at a time: trees.h); any thread reads. Each figure is exact on its own; two read
// together may be one frame apart.
class TreeCounters {
 public:
  // The tree was opened: its stream stood at batch `committed`, made durable at commit_ms
  // (0: unknown, nothing committed yet).
  void opened(uint64_t committed, int64_t commit_ms);
  void op() { ops_.fetch_add(1, std::memory_order_relaxed); }
  void write(uint64_t bytes) { data_bytes_.fetch_add(bytes, std::memory_order_relaxed); }
  void committed(uint64_t batch, int64_t now_ms);
  // backupd asked for the tree's manifest: a reconcile (baseline) begins.
  void reconcile() { reconciles_.fetch_add(1, std::memory_order_relaxed); }

  uint64_t ops() const { return ops_.load(std::memory_order_relaxed); }
  uint64_t data_bytes() const { return data_bytes_.load(std::memory_order_relaxed); }
  uint64_t batches() const { return batches_.load(std::memory_order_relaxed); }
  uint64_t reconciles() const { return reconciles_.load(std::memory_order_relaxed); }
  uint64_t committed_batch() const { return committed_.load(std::memory_order_relaxed); }
  int64_t last_commit_ms() const { return last_commit_ms_.load(std::memory_order_relaxed); }

 private:
  // Since the process started:
  std::atomic<uint64_t> ops_{0};         // Op frames applied
  std::atomic<uint64_t> data_bytes_{0};  // file data written (decoded Write bytes)
  std::atomic<uint64_t> batches_{0};     // batches committed and acknowledged
  std::atomic<uint64_t> reconciles_{0};
  // Where the tree stands (carried over from disk at open):
  std::atomic<uint64_t> committed_{0};       // the stream's last durable batch
  std::atomic<int64_t> last_commit_ms_{0};   // when it was made durable; 0 if never
};

class Monitor {
 public:
  // root: --root, whose filesystem /metrics reports; servers: every --server ("ADDR:PORT").
  Monitor(std::string root, const std::vector<std::string>& servers);

  // The counters of volume "host:path", made on first use; they live as long as the Monitor.
  TreeCounters& tree(const std::string& host, const std::string& path);
  // server (one of those given) welcomed a session, or the session ended.
  void session_started(const std::string& server);
  void session_ended(const std::string& server);
  // A connection to server ended before it welcomed it (refused, unreachable, TLS, identity).
  void connect_failed(const std::string& server);

  // The /metrics text.
  std::string metrics_text() const;
  // {since_start, now} for StatsFile::write: totals and per volume ("host:path") since start;
  // whether a session with any backupd runs (backupd_connected), each server's link (servers)
  // and each tree's position.
  std::pair<nlohmann::json, nlohmann::json> stats() const;

 private:
  // The link with one backupd.
  struct Link {
    std::atomic<bool> up{false};
    std::atomic<uint64_t> sessions{0};
    std::atomic<uint64_t> connect_failures{0};
  };
  Link& link(const std::string& server);

  const std::string root_;
  std::map<std::string, std::unique_ptr<Link>> links_;  // by server; fixed at construction
  mutable std::mutex mu_;  // leaf: guards the map only, never held across I/O
  // By (host, path); guarded by mu_.
  std::map<std::pair<std::string, std::string>, std::unique_ptr<TreeCounters>> trees_;
};

}  // namespace bkp::replicator
