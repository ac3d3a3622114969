// Path rules for everything a peer names (see path.h). Kept tiny and separate so the applier,
// the server's volume table and the tests all use one definition of "a safe path".
#include "common/path.h"

#include <fmt/format.h>

namespace bkp {
namespace {

Result<void> check_components(std::string_view path, std::string_view what) {
  if (path.find('\0') != std::string_view::npos) {
    return fail(EINVAL, fmt::format("{} contains a NUL byte", what));
  }
  size_t start = 0;
  while (true) {
    size_t slash = path.find('/', start);
    std::string_view comp = path.substr(start, slash == std::string_view::npos ? slash : slash - start);
    if (comp.empty()) return fail(EINVAL, fmt::format("{} '{}' has an empty component", what, path));
    if (comp == "." || comp == "..") {
      return fail(EINVAL, fmt::format("{} '{}': component '{}' is not allowed", what, path, comp));
    }
    if (slash == std::string_view::npos) return {};
    start = slash + 1;
  }
}

}  // namespace

Result<void> validate_rel_path(std::string_view path) {
  if (path.empty()) return {};
  if (path.front() == '/') return fail(EINVAL, fmt::format("path '{}' is absolute", path));
  return check_components(path, "path");
}

Result<std::string> validate_volume_path(std::string_view path) {
  if (path.empty() || path.front() != '/') {
    return fail(EINVAL, fmt::format("volume path '{}' must be absolute", path));
  }
  if (path == "/") return fail(EINVAL, "volume path '/' is not allowed: name a directory");
  BKP_TRY_VOID(check_components(path.substr(1), "volume path"));
  return std::string(path);
}

Result<void> validate_snapshot_id(std::string_view id) {
  // "YYYYMMDDTHHMMSS.mmmZ": digits except at 8 ('T'), 15 ('.') and 19 ('Z').
  bool ok = id.size() == 20;
  for (size_t i = 0; ok && i < id.size(); ++i) {
    const char want = i == 8 ? 'T' : i == 15 ? '.' : i == 19 ? 'Z' : '\0';
    ok = want != '\0' ? id[i] == want : (id[i] >= '0' && id[i] <= '9');
  }
  if (ok) return {};
  return fail(EINVAL, fmt::format("'{}' is not a snapshot id (like 20261126T010203.123Z)",
                                  std::string(id.substr(0, 64))));
}

Result<void> validate_host(std::string_view host) {
  if (host.empty() || host.size() > 253) return fail(EINVAL, "host name must have 1 to 253 characters");
  if (host.front() == '.' || host.front() == '-') {
    return fail(EINVAL, fmt::format("host name '{}' must not start with '.' or '-'", host));
  }
  for (char c : host) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '_';
    if (!ok) return fail(EINVAL, fmt::format("host name '{}' has a character outside [A-Za-z0-9._-]", host));
  }
  if (host == "." || host == "..") return fail(EINVAL, "host name must not be '.' or '..'");
  return {};
}

std::string_view parent_of(std::string_view rel) {
  size_t slash = rel.rfind('/');
  return slash == std::string_view::npos ? std::string_view() : rel.substr(0, slash);
}

std::string_view base_of(std::string_view rel) {
  size_t slash = rel.rfind('/');
  return slash == std::string_view::npos ? rel : rel.substr(slash + 1);
}

std::string join_rel(std::string_view parent, std::string_view name) {
  if (parent.empty()) return std::string(name);
  std::string out(parent);
  out += '/';
  out += name;
  return out;
}

std::string escape_path(std::string_view abs_path) {
  std::string_view p = abs_path;
  while (!p.empty() && p.front() == '/') p.remove_prefix(1);
  std::string out;
  for (size_t i = 0; i < p.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(p[i]);
    bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '_' || (c == '.' && i > 0);
    if (c == '/') {
      out += '-';
    } else if (plain) {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  return out;
}

}  // namespace bkp
