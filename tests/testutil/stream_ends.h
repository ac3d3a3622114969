// Both ends of one stream over any connection, as the daemons run them but without a daemon:
// for tests and fuzz targets that drive a Sender and a Receiver directly (socketpair, cuts,
// restarts in between). serve_stream is backupd's (or a replica's) receiving loop; send_tree
// is a node's session on a plain directory, with the baseline or reconcile its receiver asks for.
#pragma once

#include <cstdint>
#include <string>

#include "common/changes/applier.h"
#include "common/changes/change_log.h"
#include "common/changes/shipper.h"
#include "common/net/conn.h"
#include "common/result.h"
#include "common/stream/receiver.h"
#include "common/stream/sender.h"

namespace bkp::testutil {

// A plain directory as the source, as backupfs's backing tree is: files are identified by inode
// (tree_file_ref) and opened by finding that inode again (the tree must be small).
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

// Reads the HelloOk, rebuilds the log from a scan of src_root when the receiver asks for a
// baseline (a reconcile against its manifest, narrowed by block digests), then sends every
// batch and waits for its ack. Any failure (a cut connection included) is returned.
Result<void> send_tree(net::Conn& conn, stream::Sender& sender, changes::ChangeLog& log,
                       DirSource& data, changes::ShipCounters& counters,
                       const std::string& src_root, int timeout_ms);

}  // namespace bkp::testutil
