// A replica's live tree as a tgz (live_archive.h).
#include "replicator/live_archive.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>

#include <fmt/format.h>

#include "common/clock.h"
#include "common/files.h"
#include "common/log.h"
#include "common/path.h"
#include "server/cut.h"
#include "server/snapshot.h"

namespace bkp::replicator {

Result<HeldSnapshot> archive_live_tree(const std::string& root, const std::string& host,
                                       const std::string& path, std::shared_timed_mutex& still) {
  UniqueFd base(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!base) return fail_errno("open " + root);
  const std::string rel = fmt::format("{}/{}", host, escape_path(path));
  auto tree = open_dir_beneath(base.get(), rel, nullptr, Missing::kFail);
  if (!tree) return tree.error().code == ENOENT ? fail(ENOENT, "no tree of " + host + ":" + path)
                                                : tl::unexpected(tree.error());
  static std::atomic<uint64_t> counter{0};
  const std::string scratch_name = fmt::format("{}-{}", ::getpid(), ++counter);
  auto live = BKP_TRY(open_dir_beneath(base.get(), ".live"));
  BKP_TRY_VOID(remove_tree_at(live.get(), scratch_name, ".live/" + scratch_name));
  const std::string scratch = root + "/.live/" + scratch_name;
  BKP_TRY_VOID(make_dirs(scratch));
  auto cleanup = [&] {
    if (auto gone = remove_tree_at(live.get(), scratch_name, scratch); !gone) {
      log::warn("{}", gone.error().message);
    }
  };

  std::unique_lock lock(still, std::defer_lock);
  if (!lock.try_lock_for(kStillWait)) {
    cleanup();
    return fail(EBUSY, "the replica is connected to backupd and applying its stream, so its "
                       "trees move: backupd's mirror is the live tree then (restore --live from "
                       "backupd)");
  }
  const std::string id = server::snapshot_id_for(wall_ms());
  // Files are read by path (the tree holds still); device nodes this replicator could not make
  // are placeholders (common/changes/device_placeholders.h), read as the nodes they stand for.
  changes::DevicePlaceholders placeholders;
  auto ids = open_dir_beneath(base.get(), ".ids/" + rel, nullptr, Missing::kFail);
  if (ids) {
    if (auto opened = placeholders.open(ids->get()); !opened) {
      cleanup();
      return tl::unexpected(opened.error());
    }
  } else if (ids.error().code != ENOENT) {
    cleanup();
    return tl::unexpected(ids.error());
  }
  auto label = [&placeholders](server::CutEntry& e) { placeholders.as_source(e.st); };
  auto cut = server::Cut::take(tree->get(), -1, label, scratch + "/cut");
  if (!cut) {
    cleanup();
    return tl::unexpected(cut.error());
  }
  server::LocalArchiveStore store(scratch);
  auto written = server::write_snapshot(**cut, store, id, server::ArchiveOptions{});
  cut->reset();
  lock.unlock();
  if (!written) {
    cleanup();
    return tl::unexpected(written.error());
  }
  UniqueFd dir(::open(scratch.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  auto held = dir ? open_archive(dir.get(), id, std::move(written->digests))
                  : fail_errno("open " + scratch);
  cleanup();  // the archive stays readable through its descriptor
  return held;
}

}  // namespace bkp::replicator
