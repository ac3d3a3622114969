// The replicator's snapshot copies (snapshot_store.h).
#include "replicator/snapshot_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "common/files.h"
#include "common/path.h"
#include "replicator/held_snapshots.h"

namespace bkp::replicator {
namespace {

constexpr const char* kSuffix = ".tgz";
constexpr const char* kPartsSuffix = ".parts";
constexpr const char* kTmpPrefix = ".tmp-";

}  // namespace

Result<UniqueFd> SnapshotStore::volume_dir(const std::string& host, const std::string& path) {
  UniqueFd root(::open(root_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) return fail_errno("open " + root_);
  return open_dir_beneath(root.get(), fmt::format(".snapshots/{}/{}", host, escape_path(path)));
}

Result<wire::SnapshotInventory> SnapshotStore::inventory(const std::string& host,
                                                         const std::string& path) {
  wire::SnapshotInventory out{host, path, {}, "", 0};
  auto dir = open_held_volume(root_, host, path);  // an inventory creates nothing
  if (!dir) {
    if (dir.error().code != ENOENT) return tl::unexpected(dir.error());
    forget(host, path);  // the directory went (a purge): a kept transfer has nowhere to land
    return out;
  }
  out.ids = archive_ids(dir->get());
  if (in_ && !in_->error && in_->begin.host == host && in_->begin.path == path &&
      in_->offset > 0 && in_->offset < in_->begin.bytes) {
    out.partial_id = in_->begin.id;
    out.partial_bytes = in_->offset;
  }
  return out;
}

void SnapshotStore::begin(const wire::SnapshotBegin& b) {
  if (b.offset > 0) {
    const bool same = in_ && !in_->error && in_->begin.id == b.id && in_->begin.host == b.host &&
                      in_->begin.path == b.path && in_->begin.bytes == b.bytes &&
                      in_->begin.part_size == b.part_size && in_->begin.digests == b.digests &&
                      in_->offset == b.offset;
    if (same) {
      in_->begin.keep = b.keep;
      return;
    }
    abort();
    Incoming& in = in_.emplace();
    in.begin = b;
    in.offset = b.offset;
    in.error = Error{ESTALE, fmt::format("snapshot {}: no transfer kept to go on with at {}",
                                         b.id, b.offset)};
    return;
  }
  abort();
  Incoming& in = in_.emplace();
  in.begin = b;
  in.hasher.emplace(b.part_size);
  auto dir = volume_dir(b.host, b.path);
  if (!dir) {
    in.error = dir.error();
  } else {
    in.dir = std::move(*dir);
    const std::string tmp = kTmpPrefix + b.id + kSuffix;
    ::unlinkat(in.dir.get(), tmp.c_str(), 0);  // a leftover of an interrupted transfer
    in.file.reset(::openat(in.dir.get(), tmp.c_str(),
                           O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640));
    if (!in.file) in.error = Error{errno, fmt::format("create {}: {}", tmp, std::strerror(errno))};
  }
}

Result<void> SnapshotStore::data(const wire::SnapshotData& d) {
  if (!in_) return fail(EPROTO, "snapshot data without a SnapshotBegin");
  Incoming& in = *in_;
  if (d.offset != in.offset || d.bytes.size() > in.begin.bytes - in.offset) {
    return fail(EPROTO, fmt::format("snapshot {}: data at {} ({} bytes) where {} of {} was due",
                                    in.begin.id, d.offset, d.bytes.size(), in.offset,
                                    in.begin.bytes));
  }
  in.offset += d.bytes.size();
  if (in.error) return {};
  std::span<const char> bytes(reinterpret_cast<const char*>(d.bytes.data()), d.bytes.size());
  in.hasher->feed(bytes);
  check_parts(in);
  if (!in.error) {
    if (auto w = write_all(in.file.get(), bytes, in.begin.id + kSuffix); !w) in.error = w.error();
  }
  return {};
}

void SnapshotStore::check_parts(Incoming& in) {
  const auto& got = in.hasher->digests();
  for (; in.checked < got.size() && !in.error; ++in.checked) {
    if (got[in.checked] != in.begin.digests[in.checked]) {
      in.error = Error{EBADMSG, fmt::format("part {} of snapshot {} does not match its digest",
                                            in.checked, in.begin.id)};
    }
  }
}

Result<wire::SnapshotStored> SnapshotStore::end() {
  if (!in_) return fail(EPROTO, "SnapshotEnd without a SnapshotBegin");
  Incoming& in = *in_;
  if (!in.error && in.offset != in.begin.bytes) {
    return fail(EPROTO, fmt::format("snapshot {} ended at {} of {} bytes", in.begin.id, in.offset,
                                    in.begin.bytes));
  }
  if (!in.error) {
    in.hasher->finish();
    check_parts(in);
  }
  if (!in.error) {
    if (auto done = finish(in); !done) in.error = done.error();
  }
  wire::SnapshotStored answer{in.begin.id, 0, ""};
  if (in.error) {
    answer.code = static_cast<uint32_t>(in.error->code != 0 ? in.error->code : EIO);
    answer.text = in.error->message.substr(0, wire::kMaxText);
  }
  abort();  // removes the temporary file if it is still there
  return answer;
}

Result<void> SnapshotStore::finish(Incoming& in) {
  const wire::SnapshotBegin& b = in.begin;
  const std::string name = b.id + kSuffix, parts = b.id + kPartsSuffix;
  std::string text = fmt::format("{}\n", b.part_size);
  for (const auto& d : b.digests) text += to_hex(d) + "\n";
  const std::string parts_tmp = kTmpPrefix + parts;
  ::unlinkat(in.dir.get(), parts_tmp.c_str(), 0);
  UniqueFd pf(::openat(in.dir.get(), parts_tmp.c_str(),
                       O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640));
  if (!pf) return fail_errno("create " + parts_tmp);
  BKP_TRY_VOID(write_all(pf.get(), text, parts));
  if (::fdatasync(pf.get()) != 0) return fail_errno("sync " + parts);
  if (::renameat(in.dir.get(), parts_tmp.c_str(), in.dir.get(), parts.c_str()) != 0) {
    return fail_errno("rename " + parts);
  }
  if (::fdatasync(in.file.get()) != 0) return fail_errno("sync " + name);
  const std::string tmp = kTmpPrefix + name;
  if (::renameat(in.dir.get(), tmp.c_str(), in.dir.get(), name.c_str()) != 0) {
    return fail_errno("rename " + name);
  }
  if (::fsync(in.dir.get()) != 0) return fail_errno("sync the snapshots directory");
  return rotate(in.dir.get(), b.keep);
}

Result<void> SnapshotStore::rotate(int dir, size_t keep) {
  auto ids = archive_ids(dir);
  if (ids.size() <= keep) return {};
  for (size_t i = 0; i + keep < ids.size(); ++i) {
    for (const char* suffix : {kSuffix, kPartsSuffix}) {
      const std::string name = ids[i] + suffix;
      if (::unlinkat(dir, name.c_str(), 0) != 0 && errno != ENOENT) {
        return fail_errno("rotate out " + name);
      }
    }
  }
  return {};
}

void SnapshotStore::forget(const std::string& host, const std::string& path) {
  if (in_ && in_->begin.host == host && in_->begin.path == path) abort();
}

void SnapshotStore::abort() {
  if (!in_) return;
  if (in_->dir) {
    const std::string tmp = kTmpPrefix + in_->begin.id + kSuffix;
    ::unlinkat(in_->dir.get(), tmp.c_str(), 0);
  }
  in_.reset();
}

}  // namespace bkp::replicator
