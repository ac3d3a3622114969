// Reading and digesting an entry's extended attributes (see xattrs.h). The value may grow between
// the size query and the read, so each read retries on ERANGE.
#include "common/changes/xattrs.h"

#include <sys/xattr.h>
#include <xxhash.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include "common/log.h"

namespace bkp::changes {
namespace {

// Calls read(buf, size) (a listxattr/getxattr) until the whole value fits. nullopt with errno
// set on failure.
template <class Read>
std::optional<std::string> read_sized(const Read& read) {
  while (true) {
    ssize_t n = read(nullptr, 0);
    if (n < 0) return std::nullopt;
    std::string buf(static_cast<size_t>(n), '\0');
    if (n == 0) return buf;
    n = read(buf.data(), buf.size());
    if (n >= 0) {
      buf.resize(static_cast<size_t>(n));
      return buf;
    }
    if (errno != ERANGE) return std::nullopt;
  }
}

}  // namespace

Xattrs read_xattrs(int dir_fd, const std::string& name, const std::string& rel) {
  Xattrs out;
  std::string at = fmt::format("/proc/self/fd/{}/{}", dir_fd, name);
  auto list = read_sized([&](char* buf, size_t size) { return llistxattr(at.c_str(), buf, size); });
  if (!list) {
    if (errno != ENOTSUP && errno != ENOENT) {
      log::warn("cannot list the xattrs of '{}': {}", rel, std::strerror(errno));
    }
    return out;
  }
  std::vector<std::string> names;
  for (size_t pos = 0; pos < list->size();) {
    std::string n(list->c_str() + pos);
    pos += n.size() + 1;
    if (!n.empty()) names.push_back(std::move(n));
  }
  std::sort(names.begin(), names.end());
  for (auto& n : names) {
    auto value = read_sized(
        [&](char* buf, size_t size) { return lgetxattr(at.c_str(), n.c_str(), buf, size); });
    if (!value) {
      if (errno != ENODATA) {  // ENODATA: removed since the listing
        log::warn("cannot read xattr {} of '{}': {}", n, rel, std::strerror(errno));
      }
      continue;
    }
    out.emplace_back(std::move(n), std::move(*value));
  }
  return out;
}

uint64_t xattr_digest(const Xattrs& xattrs) {
  if (xattrs.empty()) return 0;
  XXH3_state_t* state = XXH3_createState();
  XXH3_64bits_reset(state);
  for (const auto& [name, value] : xattrs) {
    uint64_t sizes[2] = {name.size(), value.size()};
    XXH3_64bits_update(state, sizes, sizeof sizes);
    XXH3_64bits_update(state, name.data(), name.size());
    XXH3_64bits_update(state, value.data(), value.size());
  }
  uint64_t digest = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  return digest == 0 ? 1 : digest;
}

std::string xattr_names(const Xattrs& xattrs) {
  std::string out;
  for (const auto& [name, value] : xattrs) {
    out += name;
    out.push_back('\0');
  }
  return out;
}

}  // namespace bkp::changes
