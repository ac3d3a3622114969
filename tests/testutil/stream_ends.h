// Both ends of one stream over any connection, as the daemons run them but without a daemon:
// for tests and fuzz targets that drive a Sender and a Receiver directly (socketpair, cuts,
// restarts in between). serve_stream is backupd's (or a replica's) receiving loop; send_tree
// is a node's session, with the baseline or reconcile its receiver asks for; LoggedTree is a
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

// Answers HelloOk with the receiver's position for `instance`, then applies frames (and answers
// manifest and digest requests, acks commits) until the connection ends, which is success. An
// error means the receiver refused a frame. ops counts the Op frames received, if given.
Result<void> serve_stream(net::Conn& conn, stream::Receiver& receiver, changes::Applier& applier,
                          uint64_t instance, int timeout_ms, uint64_t* ops = nullptr);

// What send_tree does when the receiver asks for a baseline.
enum class OnBaseline {
  kRefuse,   // an error (kUnexpectedBaseline): this receiver should know the stream
  kSendLog,  // send the log as it is: it holds everything since the empty tree
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
