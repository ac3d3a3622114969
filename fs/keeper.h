// The keeper: why a backupfs mount outlives every backupfs worker.
//
// `backupfs DIR ...` starts the keeper. It checks the configuration, opens DIR (before the mount
// hides it), binds the node's port, creates the takeover memfds (takeover.h), mounts, and then
// only holds all of that while a worker — the same binary, run again with --worker — serves the
// FUSE connection and the port. The kernel keeps a FUSE connection while any process holds its
// /dev/fuse descriptor, so a worker that dies leaves the mount waiting, not broken: the keeper
// starts another, which takes the same descriptors, adopts the node ids and open files its
// predecessor left in the memfds, replays INIT and has the kernel resend what was left
// unanswered (kernel_channel.h). The application sees a pause.
//
// Signals:
//   keeper SIGHUP            upgrade: the worker finishes what it read and exits; the keeper
//                            starts the binary now at the same path (a new version, if replaced)
//   worker SIGTERM           the same, asked of the worker directly
//   worker SIGKILL / crash   a new worker takes over; requests in flight are resent
//   keeper SIGTERM / SIGINT  stop: unmount, the worker ships what it holds (up to 10 s), exit
//   fusermount3 -u DIR       the worker sees the connection end, ships, exits; so does the keeper
// The worker dies with the keeper (PR_SET_PDEATHSIG): kill -9 of the keeper ends the mount as
// before, so a stuck backupfs can always be cleared with kill and fusermount3 -u.
//
// The keeper logs "worker PID serving" once a worker has taken over and serves. A worker that
// fails before serving twice in a row is replaced by the keeper's own binary (the version that
// mounted; a broken upgrade must not cost the mount), and five failures in a row end the mount
// (exit 1) instead of looping.
#pragma once

#include <string>
#include <vector>

#include "fs/run.h"

namespace bkp::fs {

// Descriptors a worker inherits from the keeper, passed as --worker=F,R,L,N,O,S,P.
struct WorkerFds {
  int fuse = -1;      // the /dev/fuse connection
  int root = -1;      // DIR as it was before the mount
  int listener = -1;  // the node's listening socket
  int nodes = -1;     // memfd: NodeRecords
  int files = -1;     // memfd: OpenRecords
  int session = -1;   // memfd: the INIT exchange
  int channel = -1;   // to the keeper: "serving", open files with no name left (orphans.h)

  std::string format() const;
  static Result<WorkerFds> parse(std::string_view text);
};

// libfuse's options for the mount (keeper) and for parsing requests on it (worker).
constexpr char kFuseOptions[] = "allow_other,default_permissions,fsname=backupfs,subtype=backupfs";

// Exit status of a worker that handed the connection over (SIGTERM): start the next one.
constexpr int kExitHandedOver = 75;

// The keeper's life (run() calls it when not --worker). args: the command line after the
// program name, given again to each worker. Returns the process exit status.
int run_keeper(const Options& options, const std::vector<std::string>& args);

}  // namespace bkp::fs
