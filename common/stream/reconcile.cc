// Reconcile by manifest (see reconcile.h): the receiver's walk and the sender's collection, then
// block digests on both sides. The same walk, labelled by inode and with content digests on
// request, describes a tree for a verify (server/verify.h). The walk uses openat/fdopendir from
// the tree's descriptor and never follows a symlink, like the baseline scan; every name of a
// hard-linked file is its own entry (the sender links them).
#include "common/stream/reconcile.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <tuple>
#include <vector>

#include "common/changes/direct_reader.h"
#include "common/changes/xattrs.h"
#include "common/files.h"
#include "common/log.h"
#include "common/net/messenger.h"
#include "common/path.h"
#include "common/unique_fd.h"
#include "common/xxh3.h"

namespace bkp::stream {
namespace {

// How a manifest labels an entry: its id and ctime (see reconcile.h and walk_manifest).
using Labeler = std::function<std::pair<uint64_t, int64_t>(const struct stat&)>;
using Sink = std::function<Result<void>(wire::ManifestEntry&&)>;

// XXH3-64 of the bytes of the regular file `name` in dir_fd (never 0), or 0 if it cannot be read.
// A verify reads the whole tree once: large files past the page cache (direct_reader.h).
uint64_t content_digest(int dir_fd, const std::string& name) {
  UniqueFd fd(openat(dir_fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return 0;
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> state(XXH3_createState(),
                                                                  &XXH3_freeState);
  XXH3_64bits_reset(state.get());
  constexpr size_t kRead = 1u << 20;
  struct stat st{};
  if (fstat(fd.get(), &st) != 0) return 0;
  changes::DirectReader reader(kRead);
  reader.use(fd.get(), static_cast<uint64_t>(st.st_size) >= changes::kDirectMinBytes);
  for (uint64_t off = 0;;) {
    auto got = reader.read(off, kRead, std::numeric_limits<uint64_t>::max());
    if (!got) return 0;
    if (got->empty()) break;
    XXH3_64bits_update(state.get(), got->data(), got->size());
    off += got->size();
  }
  return std::max<uint64_t>(XXH3_64bits_digest(state.get()), 1);
}

// Walks a tree into manifest entries, handed one by one to a sink; through placeholders when
// the tree has them (an Applier's).
class Walker {
 public:
  Walker(int tree_fd, Labeler label, uint8_t flags, Sink sink,
         const changes::DevicePlaceholders* placeholders)
      : tree_fd_(tree_fd),
        label_(std::move(label)),
        flags_(flags),
        sink_(std::move(sink)),
        placeholders_(placeholders) {}

  Result<void> run() {
    struct stat root{};
    if (fstat(tree_fd_, &root) != 0) return fail_errno("manifest: stat of the tree");
    BKP_TRY_VOID(add(tree_fd_, ".", "", root));
    return dir(tree_fd_, "");
  }

 private:
  Result<void> dir(int fd, const std::string& rel) {
    auto names = list_names(fd, fmt::format("'{}'", rel));
    if (!names) return tl::unexpected(names.error().wrap("manifest"));
    for (const auto& name : *names) {
      struct stat st{};
      if (fstatat(fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      if (placeholders_ != nullptr) placeholders_->as_source(st);
      std::string child = join_rel(rel, name);
      BKP_TRY_VOID(add(fd, name, child, st));
      if (!S_ISDIR(st.st_mode)) continue;
      UniqueFd sub(openat(fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      // Gone or replaced since it was listed: only a tree walked while it changes (a verify).
      if (!sub && (errno == ENOENT || errno == ENOTDIR || errno == ELOOP)) continue;
      if (!sub) return fail_errno(fmt::format("manifest: open '{}'", child));
      BKP_TRY_VOID(dir(sub.get(), child));
    }
    return {};
  }

  Result<void> add(int dir_fd, const std::string& name, const std::string& rel,
                   const struct stat& st) {
    wire::ManifestEntry e;
    e.path = rel;
    e.mode = st.st_mode;
    e.uid = st.st_uid;
    e.gid = st.st_gid;
    e.size = static_cast<uint64_t>(st.st_size);
    e.mtime_ns = wire::to_ns(st.st_mtim);
    e.rdev = st.st_rdev;
    std::tie(e.id, e.ctime_ns) = label_(st);
    if (S_ISREG(st.st_mode)) {
      if (flags_ & wire::kManifestContent) e.content = content_digest(dir_fd, name);
    } else if (S_ISLNK(st.st_mode)) {
      std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
      ssize_t n = readlinkat(dir_fd, name.c_str(), target.data(), target.size());
      if (n >= 0) target.resize(static_cast<size_t>(n));
      e.target = n >= 0 ? std::move(target) : std::string();
    }
    changes::Xattrs xattrs = changes::read_xattrs(dir_fd, name, rel);
    e.xattr_digest = changes::xattr_digest(xattrs);
    e.xattr_names = changes::xattr_names(xattrs);
    return sink_(std::move(e));
  }

  const int tree_fd_;
  const Labeler label_;
  const uint8_t flags_;
  const Sink sink_;
  const changes::DevicePlaceholders* const placeholders_;
};

// Sends a walk of the tree as Manifest frames of at most kManifestChunk bytes, the last flagged.
Result<void> send_walk(net::Conn& conn, int tree_fd, Labeler label, uint8_t flags,
                       const changes::DevicePlaceholders* placeholders) {
  changes::TreeWarmer warm(tree_fd);  // ahead of the walk, in parallel (scan.h)
  wire::Manifest chunk;
  size_t size = 0;
  auto flush = [&]() -> Result<void> {
    BKP_TRY_VOID(net::send(conn, chunk));
    chunk.entries.clear();
    size = 0;
    return conn.flush();
  };
  BKP_TRY_VOID(Walker(tree_fd, std::move(label), flags, [&](wire::ManifestEntry&& e) {
    size += wire::encoded_size(e);
    chunk.entries.push_back(std::move(e));
    return size >= kManifestChunk ? flush() : Result<void>{};
  }, placeholders).run());
  chunk.last = 1;
  return flush();
}

// A verify's labels: names of one regular file share its inode number, and every entry's ctime
// says when it last changed (server/verify_compare.h, settled()).
std::pair<uint64_t, int64_t> by_inode(const struct stat& st) {
  return {S_ISREG(st.st_mode) ? static_cast<uint64_t>(st.st_ino) : 0, wire::to_ns(st.st_ctim)};
}

// Where a block [off, off + len) holds data rather than holes (SEEK_DATA/SEEK_HOLE), as a
// hash that seeds the block's digest: a hole and allocated zeros read alike but are not the
// same copy (disk use, and what the comparer of a restore sees).
uint64_t layout_seed(const changes::ExtentMap& data, uint64_t off, uint64_t len) {
  std::vector<uint64_t> cuts;
  const auto& ranges = data.ranges();
  auto it = ranges.upper_bound(off);
  if (it != ranges.begin()) --it;
  for (; it != ranges.end() && it->first < off + len; ++it) {
    uint64_t a = std::max(it->first, off), b = std::min(it->second, off + len);
    if (b <= a) continue;
    cuts.push_back(a - off);
    cuts.push_back(b - off);
  }
  return cuts.empty() ? 0 : XXH3_64bits(cuts.data(), cuts.size() * sizeof(uint64_t));
}

// The digest of each block [first, first + count) of the open file of this size, as far as it
// goes: XXH3 of its bytes, seeded with its layout of data and holes.
Result<std::vector<uint64_t>> block_digests(int fd, uint64_t size, uint64_t first,
                                            uint32_t count) {
  std::vector<uint64_t> out;
  if (first > size / kDigestBlock) return out;  // past the end (and no overflow below)
  changes::ExtentMap data;
  changes::data_regions(fd, size, data);
  // Many blocks are read past the page cache (direct_reader.h); the caller's descriptor gets
  // its flags back afterwards.
  uint64_t end = std::min(size, (first + count) * kDigestBlock);
  int flags = fcntl(fd, F_GETFL);
  changes::DirectReader reader(kDigestBlock);
  bool direct =
      reader.use(fd, flags >= 0 && end - first * kDigestBlock >= changes::kDirectMinBytes);
  Result<void> done;
  for (uint64_t b = first; b < first + count; ++b) {
    uint64_t off = b * kDigestBlock;
    if (off >= size) break;
    size_t want = static_cast<size_t>(std::min<uint64_t>(kDigestBlock, size - off));
    // Fewer than want only where the file shrank meanwhile: the digest of what is there.
    auto read = reader.read(off, want, end);
    if (!read) {
      done = tl::unexpected(read.error().wrap("digest"));
      break;
    }
    out.push_back(XXH3_64bits_withSeed(read->data(), read->size(), layout_seed(data, off, want)));
  }
  if (direct) (void)fcntl(fd, F_SETFL, flags);
  if (!done) return tl::unexpected(done.error());
  return out;
}

// The digest of a hole of `length` bytes: a hole of ours past the end of the receiver's copy
// needs nothing (the receiver's truncate makes the same hole).
uint64_t hole_digest(size_t length) {
  static const std::vector<char> zeros(kDigestBlock, 0);
  return XXH3_64bits_withSeed(zeros.data(), length, 0);
}

// The blocks of one file that differ from the receiver's copy, as extents.
Result<changes::ExtentMap> differing_blocks(net::Conn& conn, const changes::FileRef& file,
                                            int fd, uint64_t size, int timeout_ms) {
  changes::ExtentMap differ;
  uint64_t blocks = (size + kDigestBlock - 1) / kDigestBlock;
  for (uint64_t first = 0; first < blocks; first += kMaxDigests) {
    auto count = static_cast<uint32_t>(std::min<uint64_t>(kMaxDigests, blocks - first));
    BKP_TRY_VOID(net::send_now(conn, wire::DigestRequest{file.id, kDigestBlock, first, count}));
    // Both sides read at once: ours while the receiver reads its copy.
    auto mine = BKP_TRY(block_digests(fd, size, first, count));
    auto theirs = BKP_TRY(net::expect<wire::Digests>(conn, timeout_ms));
    if (theirs.id != file.id || theirs.first != first || theirs.digests.size() > count) {
      return fail(EPROTO, "Digests that answer another request");
    }
    for (size_t i = 0; i < mine.size(); ++i) {
      uint64_t off = (first + i) * kDigestBlock;
      uint64_t len = std::min<uint64_t>(kDigestBlock, size - off);
      bool same = i < theirs.digests.size()
                      ? theirs.digests[i] == mine[i]
                      : off >= theirs.size && mine[i] == hole_digest(static_cast<size_t>(len));
      if (!same) differ.add(off, len);
    }
  }
  return differ;
}

// [start, end) split into the parts inside data's ranges (to ship) and outside (holes).
void split(const changes::ExtentMap& data, uint64_t start, uint64_t end, changes::ExtentMap& ship,
           changes::ExtentMap& holes) {
  const auto& ranges = data.ranges();
  auto it = ranges.upper_bound(start);
  if (it != ranges.begin()) --it;
  uint64_t at = start;
  for (; it != ranges.end() && it->first < end; ++it) {
    uint64_t a = std::max(it->first, start), b = std::min(it->second, end);
    if (b <= a) continue;
    if (a > at) holes.add(at, a - at);
    ship.add(a, b - a);
    at = b;
  }
  if (at < end) holes.add(at, end - at);
}

}  // namespace

Result<void> send_digests(net::Conn& conn, const changes::Applier& applier,
                          const wire::DigestRequest& request) {
  if (request.block_size != kDigestBlock || request.count > kMaxDigests) {
    return fail(EPROTO, fmt::format("DigestRequest for blocks of {} bytes (this side hashes {}), "
                                    "{} at once (at most {})", request.block_size, kDigestBlock,
                                    request.count, kMaxDigests));
  }
  wire::Digests answer{request.id, 0, request.first, {}};
  if (auto fd = applier.open_id(request.id)) {
    struct stat st{};
    if (fstat(fd->get(), &st) != 0) return fail_errno("digests: stat");
    answer.size = static_cast<uint64_t>(st.st_size);
    answer.digests = BKP_TRY(block_digests(fd->get(), answer.size, request.first, request.count));
  }
  return net::send_now(conn, answer);
}

Result<Narrowed> narrow_by_digests(net::Conn& conn, changes::ChangeLog& log,
                                   changes::DataSource& source, int timeout_ms) {
  Narrowed out;
  for (const auto& file : log.verifying()) {
    auto fd = source.open_file(file);
    if (!fd) {
      if (fd.error().code == ENOENT || fd.error().code == ESTALE) continue;  // gone since
      return tl::unexpected(fd.error());
    }
    struct stat st{};
    if (fstat(fd->get(), &st) != 0) return fail_errno("digests: stat");
    auto size = static_cast<uint64_t>(st.st_size);
    auto differ = BKP_TRY(differing_blocks(conn, file, fd->get(), size, timeout_ms));
    uint64_t equal = size - differ.total_bytes();
    // Of the blocks that differ, our data goes as data and our holes as kPunch, so a sparse
    // file stays sparse on the receiver.
    changes::ExtentMap data;
    changes::data_regions(fd->get(), size, data);
    changes::ExtentMap ship, holes;
    for (const auto& [start, end] : differ.ranges()) split(data, start, end, ship, holes);
    if (!log.narrow(file.id, std::move(ship))) continue;  // gone (or narrowed) meanwhile
    for (const auto& [start, end] : holes.ranges()) {
      wire::Op punch;
      punch.kind = wire::OpKind::kPunch;
      punch.id = file.id;
      punch.offset = start;
      punch.size = end - start;
      log.record(std::move(punch));
    }
    ++out.files;
    out.kept_bytes += equal;
  }
  return out;
}

Result<void> send_manifest(net::Conn& conn, const changes::Applier& applier) {
  return send_walk(conn, applier.tree_fd(), [&applier](const struct stat& st) {
    if (!S_ISREG(st.st_mode)) return std::pair<uint64_t, int64_t>{0, 0};
    uint64_t id = applier.id_of_inode(st.st_ino).value_or(0);
    return std::pair<uint64_t, int64_t>{id, id != 0 ? applier.source_ctime(id) : 0};
  }, 0, &applier.placeholders());
}

Result<void> send_tree_manifest(net::Conn& conn, int tree_fd, uint8_t flags,
                                const changes::DevicePlaceholders* placeholders) {
  return send_walk(conn, tree_fd, by_inode, flags, placeholders);
}

Result<changes::Manifest> walk_manifest(int tree_fd, uint8_t flags,
                                        const changes::DevicePlaceholders* placeholders) {
  changes::Manifest out;
  BKP_TRY_VOID(Walker(tree_fd, by_inode, flags, [&out](wire::ManifestEntry&& e) {
    std::string path = e.path;
    out.insert_or_assign(std::move(path), std::move(e));
    return Result<void>{};
  }, placeholders).run());
  return out;
}

Result<changes::Manifest> fetch_manifest(net::Conn& conn, int timeout_ms, uint8_t flags) {
  BKP_TRY_VOID(net::send_now(conn, wire::ManifestRequest{flags}));
  changes::Manifest out;
  while (true) {
    auto chunk = BKP_TRY(net::expect<wire::Manifest>(conn, timeout_ms).map_error([](Error e) {
      return e.wrap("manifest");
    }));
    for (auto& e : chunk.entries) {
      BKP_TRY_VOID(validate_rel_path(e.path).map_error([](Error e) { return e.wrap("manifest"); }));
      std::string path = e.path;
      out.insert_or_assign(std::move(path), std::move(e));
    }
    if (chunk.last) return out;
  }
}

}  // namespace bkp::stream
