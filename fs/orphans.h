// Open files with no name left, kept alive for the next worker.
//
// An application may unlink a file (or rename another over it) and go on using it through its
// open descriptor. Underneath, only the worker's own descriptor keeps that file alive: when the
// worker dies, the file is gone, and the successor cannot reopen the fh the kernel still holds
// (a handle of a freed inode is stale). So a worker that sees an open regular file lose its last
// name hands a descriptor of it to the keeper, which holds it while the application holds the
// file open; the keeper gives every held descriptor to each new worker before it serves, and the
// successor reopens such fhs through /proc/self/fd. When the last fh of the file is released the
// worker tells the keeper to let go. Nothing appears in the tree (a hidden link would be seen by
// backups and change st_nlink), and st_nlink stays 0 as the application expects.
//
// The channel is a SOCK_SEQPACKET socketpair per worker (keeper.h), which also carries the
// worker's "serving" message. Each message is one Message; kHold and kHeld carry the descriptor
// (SCM_RIGHTS):
//   worker -> keeper   kServing                the worker took over and serves
//                      kHold node + fd          node's file has no name left; hold it
//                      kDrop node               node's last fh was released; let go
//   keeper -> worker   kHeld node + fd ... kEnd  what it holds, queued before the worker starts
// A successor drops (kDrop) any held file no fh it adopted refers to: its last release may have
// come after its holder's death.
//
// Limits: at most kMaxHeld files are held (more are rare; beyond it such a file answers ESTALE
// after a restart, as it would without this). A file opened just as another request takes its
// last name may be missed the same way. Held files do not survive the keeper (a restart of the
// whole unit mounts again, or takes the mount from systemd's store, without them).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>

#include "common/result.h"
#include "common/unique_fd.h"

namespace bkp::fs {

enum class ChannelKind : uint32_t { kServing = 1, kHold = 2, kDrop = 3, kHeld = 4, kEnd = 5 };

struct ChannelMessage {
  ChannelKind kind;
  uint32_t pad = 0;
  uint64_t node = 0;
};

// A connected pair for one worker: keeper's end first (non-blocking), the worker's second.
Result<std::pair<UniqueFd, UniqueFd>> make_channel();

// The keeper's side: the files it holds, by node id.
class HeldFiles {
 public:
  static constexpr size_t kMaxHeld = 4096;

  // Queues every held file and then kEnd on channel (the keeper's end of a new worker's).
  void send_all(int channel) const;
  // Reads what the worker sent until none is left. Returns whether kServing was among it, and
  // sets *closed once the worker's end is closed.
  bool receive(int channel, bool* closed);
  size_t size() const { return held_.size(); }

 private:
  std::map<uint64_t, UniqueFd> held_;
};

// The worker's side, with the count of open fhs per node it needs to know which files to hold.
class Orphans {
 public:
  // channel: the worker's end, or -1 (no keeper: nothing is held).
  explicit Orphans(int channel) : channel_(channel) {}

  // Takes what the keeper holds (before serving).
  Result<void> receive();
  // Lets go of held files no fh refers to (a successor, once it counted the adopted fhs).
  void drop_unopened();
  // Tells the keeper that this worker serves.
  void serving();

  // An fh of node's file was opened / released (the last release lets a held file go).
  void opened(uint64_t node);
  void released(uint64_t node);
  // Whether some fh refers to node's file.
  bool is_open(uint64_t node);

  // fd (any descriptor of node's file, O_PATH will do) if the file has no name left (st_nlink
  // 0) and is open: sent to the keeper and kept here to reopen from.
  void hold_if_nameless(uint64_t node, UniqueFd fd);
  // A new descriptor of held node's file opened with flags; nullopt if it is not held.
  std::optional<Result<UniqueFd>> reopen(uint64_t node, int flags);

 private:
  void send(ChannelMessage m, int fd = -1);

  const int channel_;
  std::mutex mu_;
  std::unordered_map<uint64_t, uint32_t> opens_;  // GUARDED_BY(mu_): open fhs per node
  std::unordered_map<uint64_t, UniqueFd> held_;   // GUARDED_BY(mu_)
};

}  // namespace bkp::fs
