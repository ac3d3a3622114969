// Thin, errno-preserving wrappers around name_to_handle_at / open_by_handle_at.
//
// Handles are kept as one std::string (header + bytes) so they can key hash maps and travel
// inside changes::FileRef unchanged. Before a syscall they are copied into a properly aligned
// stack buffer: std::string storage makes no alignment promise for struct file_handle.
#include "fs/file_handle.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cstring>

namespace bkp::fs {
namespace {

constexpr size_t kHandleBufSize = sizeof(file_handle) + MAX_HANDLE_SZ;

}  // namespace

Result<std::string> handle_at(int dir_fd, const char* name, int flags) {
  alignas(file_handle) char buf[kHandleBufSize];
  auto* fh = reinterpret_cast<file_handle*>(buf);
  fh->handle_bytes = MAX_HANDLE_SZ;
  int mount_id = 0;
  if (::name_to_handle_at(dir_fd, name, fh, &mount_id, flags) < 0) {
    return fail_errno(std::string("name_to_handle_at ") + (*name ? name : "."));
  }
  return std::string(buf, sizeof(file_handle) + fh->handle_bytes);
}

Result<UniqueFd> open_by_handle(int mount_fd, std::string_view handle, int flags) {
  if (handle.size() < sizeof(file_handle) || handle.size() > kHandleBufSize) {
    return fail(EINVAL, "open_by_handle_at: malformed handle");
  }
  alignas(file_handle) char buf[kHandleBufSize];
  std::memcpy(buf, handle.data(), handle.size());
  // ENOMEM is also what ext4 answers for an inode being freed at this very moment (iget_locked
  // finds it dying): retry briefly, and the answer becomes ESTALE once it is gone. A real
  // shortage still comes out as ENOMEM.
  for (int attempt = 0;; ++attempt) {
    int fd = ::open_by_handle_at(mount_fd, reinterpret_cast<file_handle*>(buf), flags | O_CLOEXEC);
    if (fd >= 0) return UniqueFd(fd);
    if (errno != ENOMEM || attempt == 20) return fail_errno("open_by_handle_at");
    ::usleep(500);
  }
}

uint64_t file_id_of(std::string_view handle) {
  uint64_t id = XXH3_64bits(handle.data(), handle.size());
  return id == 0 ? 1 : id;
}

changes::Identify make_identify() {
  return [](int dir_fd, const char* name,
            const struct stat&) -> std::optional<changes::FileRef> {
    auto handle = handle_at(dir_fd, name, 0);
    if (!handle) return std::nullopt;  // vanished (or not exportable): the scan skips it
    uint64_t id = file_id_of(*handle);
    return changes::FileRef{id, std::move(*handle)};
  };
}

Result<UniqueFd> HandleSource::open_file(const changes::FileRef& file) {
  auto fd = open_by_handle(mount_fd_, file.handle, O_RDONLY | O_NOATIME);
  if (!fd && fd.error().code == ESTALE) return fail(ENOENT, fd.error().message);
  return fd;
}

}  // namespace bkp::fs
