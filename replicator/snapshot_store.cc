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

SnapshotStore::SnapshotStore(std::string root) : root_(std::move(root)) {}

SnapshotStore::~SnapshotStore() {
  for (auto& [key, in] : kept_) discard(std::move(in));
}

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
  std::lock_guard lock(mu_);
  if (auto it = kept_.find(key(host, path)); it != kept_.end()) {
    out.partial_id = it->second->begin.id;
    out.partial_bytes = it->second->offset;
  }
  return out;
}

void SnapshotStore::forget(const std::string& host, const std::string& path) {
  std::unique_ptr<Incoming> kept;
  {
    std::lock_guard lock(mu_);
    if (auto it = kept_.find(key(host, path)); it != kept_.end()) {
      kept = std::move(it->second);
      kept_.erase(it);
    }
  }
  discard(std::move(kept));
}

std::unique_ptr<SnapshotStore::Incoming> SnapshotStore::start(const wire::SnapshotBegin& b) {
  auto in = std::make_unique<Incoming>();
  in->begin = b;
  in->offset = b.offset;  // so the data that follows is in order, whatever its fate
  std::unique_ptr<Incoming> kept;
  {
    std::lock_guard lock(mu_);
    const std::string k = key(b.host, b.path);
    if (arriving_.contains(k)) {
      in->error = Error{EBUSY, fmt::format("snapshot {}: another server's session is sending an "
                                           "archive of {} now",
                                           b.id, k)};
      return in;
    }
    arriving_.insert(k);
    in->claimed = true;
    if (auto it = kept_.find(k); it != kept_.end()) {
      kept = std::move(it->second);
      kept_.erase(it);
    }
  }
  if (b.offset > 0) {
    const bool same = kept && kept->begin.id == b.id && kept->begin.bytes == b.bytes &&
                      kept->begin.part_size == b.part_size && kept->begin.digests == b.digests &&
                      kept->offset == b.offset;
    if (same) {
      kept->begin.keep = b.keep;
      kept->claimed = true;
      return kept;
    }
    discard(std::move(kept));
    in->error = Error{ESTALE, fmt::format("snapshot {}: no transfer kept to go on with at {}",
                                          b.id, b.offset)};
    return in;
  }
  discard(std::move(kept));
  in->hasher.emplace(b.part_size);
  auto dir = volume_dir(b.host, b.path);
  if (!dir) {
    in->error = dir.error();
  } else {
    in->dir = std::move(*dir);
    const std::string tmp = kTmpPrefix + b.id + kSuffix;
    ::unlinkat(in->dir.get(), tmp.c_str(), 0);  // a leftover of an interrupted transfer
    in->file.reset(::openat(in->dir.get(), tmp.c_str(),
                            O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640));
    if (!in->file) {
      in->error = Error{errno, fmt::format("create {}: {}", tmp, std::strerror(errno))};
    }
  }
  return in;
}

void SnapshotStore::discard(std::unique_ptr<Incoming> in) {
  if (!in) return;
  if (in->dir) {  // before the claim goes: the next claimant may use the same name
    const std::string tmp = kTmpPrefix + in->begin.id + kSuffix;
    ::unlinkat(in->dir.get(), tmp.c_str(), 0);
  }
  if (in->claimed) {
    std::lock_guard lock(mu_);
    arriving_.erase(key(in->begin.host, in->begin.path));
  }
}

void SnapshotStore::keep(std::unique_ptr<Incoming> in) {
  if (!in) return;
  if (in->error || in->offset == 0 || in->offset >= in->begin.bytes) {  // nothing to go on with
    discard(std::move(in));
    return;
  }
  std::lock_guard lock(mu_);
  const std::string k = key(in->begin.host, in->begin.path);
  arriving_.erase(k);
  in->claimed = false;
  kept_[k] = std::move(in);  // none was kept: start() took it out while claimed
}

SnapshotStore::Intake::~Intake() { store_.keep(std::move(in_)); }

void SnapshotStore::Intake::begin(const wire::SnapshotBegin& b) {
  abort();
  in_ = store_.start(b);
}

Result<void> SnapshotStore::Intake::data(const wire::SnapshotData& d) {
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

Result<wire::SnapshotStored> SnapshotStore::Intake::end() {
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

void SnapshotStore::Intake::forget(const std::string& host, const std::string& path) {
  if (in_ && in_->begin.host == host && in_->begin.path == path) abort();
  store_.forget(host, path);
}

void SnapshotStore::Intake::abort() { store_.discard(std::move(in_)); }

}  // namespace bkp::replicator
