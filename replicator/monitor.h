// Monitor: what the replicator has done since it started, per volume and for its link to
// backupd, for the two views an operator has of it: /metrics (--metrics-listen) and
// ROOT/.stats.json (common/stats_file.h). The session thread counts; the HTTP threads and the
// thread that writes the stats file read, at any time, without waiting for the session.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

namespace bkp::replicator {

// One volume's replica (a Tree) as the monitor counts it. Written by the session thread only;
// any thread reads. Each figure is exact on its own; two read together may be one frame apart.
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
  // root: --root, whose filesystem /metrics reports.
  explicit Monitor(std::string root);

  // The counters of volume "host:path", made on first use; they live as long as the Monitor.
  TreeCounters& tree(const std::string& host, const std::string& path);
  // backupd welcomed a session (the replicator is up), or the session ended.
  void session_started();
  void session_ended();
  // A connection ended before backupd welcomed it (refused, unreachable, TLS, identity).
  void connect_failed() { connect_failures_.fetch_add(1, std::memory_order_relaxed); }

  // The /metrics text.
  std::string metrics_text() const;
  // {since_start, now} for StatsFile::write: totals and per volume ("host:path") since start;
  // the link's state and each tree's position.
  std::pair<nlohmann::json, nlohmann::json> stats() const;

 private:
  const std::string root_;
  std::atomic<bool> connected_{false};
  std::atomic<uint64_t> sessions_{0};
  std::atomic<uint64_t> connect_failures_{0};
  mutable std::mutex mu_;  // leaf: guards the map only, never held across I/O
  // By (host, path); guarded by mu_.
  std::map<std::pair<std::string, std::string>, std::unique_ptr<TreeCounters>> trees_;
};

}  // namespace bkp::replicator
