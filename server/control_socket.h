// ControlSocket: the Unix stream socket local bkptool uses to control backupd without TLS. Its
// file mode is the credential: 0660, owned by backupd's user and by the configured control group
// (else backupd's group), so only root, backupd's user and that group's members can connect.
#pragma once

#include <sys/types.h>

#include <optional>
#include <memory>
#include <string>

#include "common/result.h"
#include "common/unique_fd.h"

namespace bkp::server {

class ControlSocket {
 public:
  // Creates the parent directory if missing (0755), removes a stale socket file left by a
  // backupd that did not stop cleanly, binds and listens (non-blocking), then sets mode 0660
  // and, if gid is given, the group. EADDRINUSE when a backupd still listens there; EEXIST
  // when the path is something other than a socket (it is never removed); ENAMETOOLONG for a
  // path that does not fit a socket address.
  //
  // The socket is bound under a umask that leaves it 0660 from the start, so there is no window
  // in which others could connect; call this while the process has a single thread (umask is
  // process-wide).
  static Result<std::unique_ptr<ControlSocket>> open(const std::string& path,
                                                     std::optional<gid_t> gid);

  ControlSocket(const ControlSocket&) = delete;
  ControlSocket& operator=(const ControlSocket&) = delete;
  // Closes the socket and removes its file if it is still the one this object bound (a newer
  // backupd may have replaced it).
  ~ControlSocket();

  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }

 private:
  ControlSocket() = default;

  UniqueFd fd_;
  std::string path_;
  ino_t inode_ = 0;
  dev_t device_ = 0;
};

}  // namespace bkp::server
