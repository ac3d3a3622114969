// Reading the snapshot copies a replicator holds (held_snapshots.h): kept apart from the store
// that writes them because readers run on the restore service's threads while the store
// belongs to the session threads; files are the only thing the two share.
#include "replicator/held_snapshots.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <string_view>

#include <fmt/format.h>

#include "common/files.h"
#include "common/path.h"

namespace bkp::replicator {
namespace {

constexpr std::string_view kSuffix = ".tgz";

// The whole of a small file opened beneath dir without following a symlink.
Result<std::string> read_small(int dir, const std::string& name) {
  UniqueFd fd(::openat(dir, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return fail_errno("open " + name);
  std::string text;
  char buf[8192];
  while (true) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno("read " + name);
    if (n == 0) return text;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > (size_t{64} << 20)) return fail(EFBIG, name + " is too large");
  }
}

}  // namespace

std::vector<std::string> archive_ids(int dir) {
  std::vector<std::string> out;
  int fd = ::openat(dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR* d = fd < 0 ? nullptr : ::fdopendir(fd);
  if (d == nullptr) {
    if (fd >= 0) ::close(fd);
    return out;
  }
  while (const dirent* e = ::readdir(d)) {
    std::string_view name = e->d_name;
    if (!name.ends_with(kSuffix)) continue;
    std::string id(name.substr(0, name.size() - kSuffix.size()));
    if (validate_snapshot_id(id)) out.push_back(std::move(id));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

Result<UniqueFd> open_held_volume(const std::string& root, const std::string& host,
                                  const std::string& path) {
  UniqueFd base(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!base) return fail_errno("open " + root);
  return open_dir_beneath(base.get(), fmt::format(".snapshots/{}/{}", host, escape_path(path)),
                          nullptr, Missing::kFail);
}

Result<HeldSnapshot> open_archive(int dir, const std::string& id,
                                  std::vector<PartDigest> digests) {
  HeldSnapshot held;
  held.id = id;
  const std::string name = id + std::string(kSuffix);
  held.file.reset(::openat(dir, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!held.file) return fail_errno("open " + name);
  struct stat st{};
  if (::fstat(held.file.get(), &st) != 0) return fail_errno("stat " + name);
  held.bytes = static_cast<uint64_t>(st.st_size);
  held.part_size = kPartSize;
  held.digests = std::move(digests);
  return held;
}

Result<HeldSnapshot> open_held_snapshot(int dir, const std::string& id) {
  HeldSnapshot held = BKP_TRY(open_archive(dir, id, {}));
  const std::string name = id + std::string(kSuffix);
  const std::string parts = id + ".parts";
  auto text = BKP_TRY(read_small(dir, parts));
  std::string_view rest = text;
  auto line = [&rest]() {
    size_t nl = rest.find('\n');
    std::string_view l = rest.substr(0, nl);
    rest = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
    return l;
  };
  std::string_view first = line();
  auto [end, ec] = std::from_chars(first.data(), first.data() + first.size(), held.part_size);
  if (ec != std::errc{} || end != first.data() + first.size() || held.part_size == 0) {
    return fail(EBADMSG, fmt::format("{}: the first line is not a part size", parts));
  }
  while (!rest.empty()) {
    auto digest = digest_from_hex(line());
    if (!digest) return fail(EBADMSG, fmt::format("{}: {}", parts, digest.error().message));
    held.digests.push_back(*digest);
  }
  if (held.digests.size() != part_count(held.bytes, held.part_size)) {
    return fail(EBADMSG, fmt::format("{} lists {} digests for {} parts of {}", parts,
                                     held.digests.size(), part_count(held.bytes, held.part_size),
                                     name));
  }
  return held;
}

int64_t snapshot_id_ms(const std::string& id) {
  if (!validate_snapshot_id(id)) return 0;
  tm t{};
  int ms = 0;
  if (std::sscanf(id.c_str(), "%4d%2d%2dT%2d%2d%2d.%3dZ", &t.tm_year, &t.tm_mon, &t.tm_mday,
                  &t.tm_hour, &t.tm_min, &t.tm_sec, &ms) != 7) {
    return 0;
  }
  t.tm_year -= 1900;
  t.tm_mon -= 1;
  return static_cast<int64_t>(::timegm(&t)) * 1000 + ms;
}

}  // namespace bkp::replicator
