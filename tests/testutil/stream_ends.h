// Both ends of one stream over any connection, as the daemons run them but without a daemon:
// for tests and fuzz targets that drive a Sender and a Receiver directly (socketpair, cuts,
// restarts in between). serve_stream is backupd's (or a replica's) receiving loop and Sink the
// side that runs it; send_tree is a node's session, with the baseline or reconcile its receiver
// asks for; deliver runs the two over socketpairs until everything is through; LoggedTree is a
// source tree with the change log its changes leave.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/changes/applier.h"
#include "common/changes/change_log.h"
#include "common/changes/shipper.h"
#include "common/net/conn.h"
#include "common/result.h"
#include "common/stream/receiver.h"
#include "common/stream/sender.h"

namespace bkp::testutil {

// A plain directory as the source, as backupfs's backing tree is: files are identified by their
// inode number (send_tree's scan names them so) and opened by finding that inode again (the tree
// must be small).
class DirSource : public changes::DataSource {
 public:
  explicit DirSource(std::string root) : root_(std::move(root)) {}
  Result<UniqueFd> open_file(const changes::FileRef& f) override;

 private:
  std::string root_;
};

// Two connections over a fresh socket pair: what one sends, the other receives.
struct ConnPair {
  std::unique_ptr<net::Conn> a, b;
};
Result<ConnPair> conn_pair();

// Answers HelloOk with the receiver's position for `instance`, then applies frames (and answers
// manifest and digest requests, acks commits) until the connection ends, which is success. An
// error means the receiver refused a frame. ops counts the Op frames received, if given.
Result<void> serve_stream(net::Conn& conn, stream::Receiver& receiver, changes::Applier& applier,
                          uint64_t instance, int timeout_ms, uint64_t* ops = nullptr);

// What send_tree does when the receiver asks for a baseline.
enum class OnBaseline {
  kRefuse,   // an error (kUnexpectedBaseline): this receiver should know the stream
  kSendLog,  // the empty tree's baseline (sync-begin, sync-end), then the log: it holds
             // everything since the empty tree
  kScan,     // rebuild the log from a scan of the source tree (a reconcile against the
             // receiver's manifest, narrowed by block digests)
};

constexpr char kUnexpectedBaseline[] = "unexpected baseline request";

// Reads the HelloOk, handles a baseline request as `on_baseline` says (src_root: the tree to
// scan), then sends every batch and waits for its ack. Any failure (a cut connection included)
// is returned.
Result<void> send_tree(net::Conn& conn, stream::Sender& sender, changes::ChangeLog& log,
                       changes::DataSource& data, changes::ShipCounters& counters,
                       OnBaseline on_baseline, const std::string& src_root, int timeout_ms);

// The receiving side of a stream: an Applier on dir/tree_rel (ids in dir/ids_rel) and a Receiver
// whose state files are in dir itself, reopened from disk by restart() as a restarted process
// would be.
class Sink {
 public:
  enum class Stop { kKilled, kClean };  // how the process ended: no destructor ran, or all did

  static Result<std::unique_ptr<Sink>> open(std::string dir, std::string tree_rel,
                                            std::string ids_rel);
  Result<void> restart(Stop how);
  // serve_stream on this side.
  Result<void> serve(net::Conn& conn, uint64_t instance, int timeout_ms);

  changes::Applier& applier() { return *applier_; }
  stream::Receiver& receiver() { return *receiver_; }
  uint64_t ops() const { return ops_; }  // Op frames received, over every connection

 private:
  Sink(std::string dir, std::string tree_rel, std::string ids_rel)
      : dir_(std::move(dir)), tree_rel_(std::move(tree_rel)), ids_rel_(std::move(ids_rel)) {}

  const std::string dir_, tree_rel_, ids_rel_;
  std::unique_ptr<changes::Applier> applier_;
  std::unique_ptr<stream::Receiver> receiver_;
  uint64_t ops_ = 0;
};

// One delivery: what the sender sends from, and how the connections go.
struct Delivery {
  stream::Sender& sender;
  changes::ChangeLog& log;
  changes::DataSource& data;
  changes::ShipCounters& counters;
  uint64_t instance;               // the sender's stream
  OnBaseline on_baseline = OnBaseline::kRefuse;
  std::string src_root = {};       // for OnBaseline::kScan
  uint64_t cut_after = UINT64_MAX;  // the first connection is cut after this many frames
  bool restart_after_cut = false;  // the receiver is killed and started after each cut
  int connections = 4;             // at most
  int timeout_ms = 10000;
};

// Delivers everything in the log over socketpairs, the sink serving each connection on a thread
// while send_tree runs here. Returns how many connections it took (1: the cut, if any, came
// after the last frame). Fails when the receiver refused a frame, a baseline came unasked
// (kRefuse), or the last connection still did not deliver.
Result<int> deliver(Sink& sink, const Delivery& d);

// A sending side whose tree is built by an Applier (base/src, ids in base/src-ids), every change
// also recorded in a change log as backupfs records the application's: creations with their
// attributes, writes, truncates, punches, allocations, and the attributes of every directory an
// operation changes.
class LoggedTree {
 public:
  static Result<std::unique_ptr<LoggedTree>> open(const std::string& base);

  // Applies o and records it, unless the application's kernel would have refused it (an
  // existing name for a new entry, a rename rename(2) refuses, rmdir of a non-empty directory)
  // or the Applier refused it: then nothing changes and nothing is recorded.
  Result<void> apply(const wire::Op& o);
  Result<void> write(uint64_t id, uint64_t offset, std::string_view data);

  changes::ChangeLog& log() { return log_; }
  changes::Applier& applier() { return *applier_; }

 private:
  explicit LoggedTree(std::string root) : root_(std::move(root)) {}
  Result<void> refused(const wire::Op& o) const;
  void attr_of(const std::string& rel);

  const std::string root_;  // the tree's own path
  std::unique_ptr<changes::Applier> applier_;
  changes::ChangeLog log_;
};

}  // namespace bkp::testutil
