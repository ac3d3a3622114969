// Device node placeholders of a tree (see device_placeholders.h).
#include "common/changes/device_placeholders.h"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

#include <atomic>
#include <charconv>

#include "common/files.h"
#include "common/log.h"

namespace bkp::changes {
namespace {

constexpr const char* kDevices = "devices";  // in ids/: not a 16-hex-digit name, so never an id

std::string link_name(mode_t type, dev_t rdev, ino_t ino) {
  return fmt::format("{}{:x}.{:x}", type == S_IFCHR ? 'c' : 'b', rdev, ino);
}

// The type and rdev a link name says; 0 for a name that is not one of ours.
std::pair<mode_t, dev_t> parse_link(std::string_view name) {
  if (name.size() < 4 || (name[0] != 'c' && name[0] != 'b')) return {0, 0};
  size_t dot = name.find('.');
  if (dot == std::string_view::npos) return {0, 0};
  dev_t rdev = 0;
  auto [end, ec] = std::from_chars(name.data() + 1, name.data() + dot, rdev, 16);
  if (ec != std::errc() || end != name.data() + dot) return {0, 0};
  return {name[0] == 'c' ? S_IFCHR : S_IFBLK, rdev};
}

}  // namespace

Result<void> DevicePlaceholders::open(int ids_fd) {
  ids_fd_ = ids_fd;
  struct stat st{};
  if (fstat(ids_fd, &st) != 0) return fail_errno("stat ids");
  dev_ = st.st_dev;
  BKP_TRY_VOID(open_dir());
  return prune();
}

Result<void> DevicePlaceholders::open_dir() {
  dir_.reset(openat(ids_fd_, kDevices, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dir_ && errno != ENOENT) return fail_errno(fmt::format("open ids/{}", kDevices));
  return {};
}

Result<int> DevicePlaceholders::directory() {
  if (!dir_) {
    if (mkdirat(ids_fd_, kDevices, 0700) != 0 && errno != EEXIST) {
      return fail_errno(fmt::format("create ids/{}", kDevices));
    }
    BKP_TRY_VOID(open_dir());
    if (!dir_) return fail(ENOENT, fmt::format("ids/{} vanished", kDevices));
  }
  return dir_.get();
}

Result<void> DevicePlaceholders::create(int dir, const std::string& name, mode_t type, dev_t rdev) {
  const int devices = BKP_TRY(directory());
  UniqueFd fd(openat(dir, name.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) return fail_errno("create a placeholder");
  struct stat st{};
  std::string link;
  if (fstat(fd.get(), &st) != 0 ||
      linkat(dir, name.c_str(), devices, (link = link_name(type, rdev, st.st_ino)).c_str(), 0) != 0) {
    auto failed = fail_errno("index a placeholder");
    unlinkat(dir, name.c_str(), 0);
    return failed;
  }
  static std::atomic<bool> told{false};
  if (!told.exchange(true)) {
    log::info("this process may not create device nodes (no CAP_MKNOD): they are kept as empty "
              "files indexed in ids/{}, and read as the device nodes they stand for", kDevices);
  }
  std::lock_guard lock(mu_);
  nodes_[st.st_ino] = Node{type, rdev, std::move(link)};
  return {};
}

Result<void> DevicePlaceholders::release(ino_t ino) {
  std::string link;
  {
    std::lock_guard lock(mu_);
    auto it = nodes_.find(ino);
    if (it == nodes_.end()) return {};
    link = it->second.link;
  }
  struct stat st{};
  if (fstatat(dir_.get(), link.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_ino == ino &&
      st.st_nlink > 1) {
    return {};  // another tree name holds it
  }
  if (unlinkat(dir_.get(), link.c_str(), 0) != 0 && errno != ENOENT) {
    return fail_errno(fmt::format("unlink ids/{}/{}", kDevices, link));
  }
  std::lock_guard lock(mu_);
  nodes_.erase(ino);
  return {};
}

Result<void> DevicePlaceholders::prune() {
  std::unordered_map<ino_t, Node> nodes;
  if (dir_) {
    for (auto& name : BKP_TRY(list_names(dir_.get(), fmt::format("ids/{}", kDevices)))) {
      auto [type, rdev] = parse_link(name);
      struct stat st{};
      if (type == 0 || fstatat(dir_.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 ||
          !S_ISREG(st.st_mode)) {
        continue;
      }
      if (st.st_nlink > 1) {
        nodes[st.st_ino] = Node{type, rdev, std::move(name)};
      } else if (unlinkat(dir_.get(), name.c_str(), 0) != 0 && errno != ENOENT) {
        return fail_errno(fmt::format("unlink ids/{}/{}", kDevices, name));
      }
    }
  }
  std::lock_guard lock(mu_);
  nodes_ = std::move(nodes);
  return {};
}

void DevicePlaceholders::as_source(struct stat& st) const {
  if (!S_ISREG(st.st_mode) || st.st_dev != dev_) return;
  std::lock_guard lock(mu_);
  auto it = nodes_.find(st.st_ino);
  if (it == nodes_.end()) return;
  st.st_mode = it->second.type | (st.st_mode & 07777);
  st.st_rdev = it->second.rdev;
  st.st_size = 0;
  st.st_blocks = 0;
  if (st.st_nlink > 1) --st.st_nlink;
}

}  // namespace bkp::changes
