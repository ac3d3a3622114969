// The control socket's file is created and removed here (see control_socket.h).
//
// A socket file left behind by a killed backupd would make bind() fail with EADDRINUSE, so a
// socket file at the path is removed first — but only once a connect() to it is refused: a file
// that accepts connections belongs to a backupd that is still running, and taking its path over
// would silently cut its operators off. Anything that is not a socket is left alone: the path
// may be a typo naming a real file.
#include "server/control_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>

#include <filesystem>

#include "common/files.h"
#include "common/log.h"

namespace bkp::server {
namespace {

Result<sockaddr_un> socket_address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) {
    return fail(ENAMETOOLONG, fmt::format("control socket {}: the path must be 1 to {} bytes long",
                                          path, sizeof addr.sun_path - 1));
  }
  path.copy(addr.sun_path, path.size());
  return addr;
}

// Removes a socket file nobody listens on. EADDRINUSE if someone does, EEXIST if the path is
// not a socket.
Result<void> remove_stale(const std::string& path, const sockaddr_un& addr) {
  struct stat st{};
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    return fail_errno("control socket " + path);
  }
  if (!S_ISSOCK(st.st_mode)) {
    return fail(EEXIST, fmt::format("control socket {}: the path exists and is not a socket; "
                                    "remove it or set another control_socket", path));
  }
  UniqueFd probe(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!probe) return fail_errno("socket");
  if (connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) {
    return fail(EADDRINUSE, fmt::format("control socket {}: another backupd is listening there",
                                        path));
  }
  if (unlink(path.c_str()) != 0 && errno != ENOENT) return fail_errno("remove stale " + path);
  log::info("removed the stale control socket {}", path);
  return {};
}

}  // namespace

Result<std::unique_ptr<ControlSocket>> ControlSocket::open(const std::string& path,
                                                           std::optional<gid_t> gid) {
  sockaddr_un addr = BKP_TRY(socket_address(path));
  std::string parent = std::filesystem::path(path).parent_path().string();
  if (!parent.empty()) BKP_TRY_VOID(make_dirs(parent));
  BKP_TRY_VOID(remove_stale(path, addr));
  std::unique_ptr<ControlSocket> s(new ControlSocket);
  s->fd_.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!s->fd_) return fail_errno("socket");
  mode_t old_mask = umask(0117);  // 0660 from the first instant
  int bound = bind(s->fd_.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  int bind_errno = errno;
  umask(old_mask);
  if (bound != 0) {
    errno = bind_errno;
    return fail_errno("bind control socket " + path);
  }
  s->path_ = path;  // from here on the destructor removes the file
  struct stat st{};
  if (stat(path.c_str(), &st) != 0) return fail_errno("stat " + path);
  s->inode_ = st.st_ino;
  s->device_ = st.st_dev;
  if (chmod(path.c_str(), 0660) != 0) return fail_errno("chmod 660 " + path);
  if (gid && chown(path.c_str(), static_cast<uid_t>(-1), *gid) != 0) {
    return fail_errno(fmt::format("chown {} to group {}", path, *gid));
  }
  if (listen(s->fd_.get(), 64) != 0) return fail_errno("listen on " + path);
  return s;
}

ControlSocket::~ControlSocket() {
  if (path_.empty()) return;
  fd_.reset();
  struct stat st{};
  if (lstat(path_.c_str(), &st) == 0 && st.st_ino == inode_ && st.st_dev == device_) {
    unlink(path_.c_str());
  }
}

}  // namespace bkp::server
