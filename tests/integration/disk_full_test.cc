// Full disks, for real: each test mounts a small tmpfs where one party keeps its files, fills it
// with a filler file, and checks that the full disk costs nothing but time.
//
// - backupd's state directory (its catalog and the mirror): failures are recorded where
//   operators look (issue 9, item 6). While the disk is full, scheduled runs fail because the
//   catalog cannot insert their rows; `bkptool history` lists them anyway (backupd keeps them in
//   memory), with the reason and with the changes the node made meanwhile (empty files: creating
//   them takes no space on tmpfs, so the mirror still gets them). Once space returns the next
//   run writes a snapshot that counts those changes too (a failed run hands its counts on), and
//   after a restart of backupd the failed runs are still in the history: they were stored in
//   the catalog, not only shown from memory. And data written while the mirror cannot take it
//   waits on the node and arrives, exactly, once space returns.
// - One replicator's root: that replica waits, everyone else (the mirror, the other replica)
//   keeps up, and the full one catches up exactly once space returns.
// - The application's own directory: the application gets ENOSPC, as without backupfs, and the
//   copies hold exactly what the writes that succeeded left.
#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "common/full_disk.h"
#include "common/unique_fd.h"
#include "tests/integration/control.h"
#include "tests/integration/workload.h"
#include "tests/testutil/tree_compare.h"
#include "tests/testutil/wait.h"

namespace bkp::it {
namespace {

constexpr int kNewFiles = 5;

class DiskFullTest : public ControlTest {
 protected:
  void TearDown() override {
    ControlTest::TearDown();  // unmounts backupfs, stops the daemons: nothing holds a tmpfs
    for (auto it = tmpfs_.rbegin(); it != tmpfs_.rend(); ++it) {
      if (::umount(it->c_str()) != 0) {
        ADD_FAILURE() << "umount " << *it << ": " << std::strerror(errno);
        ::umount2(it->c_str(), MNT_DETACH);
      }
    }
  }

  // Mounts a tmpfs of `size` (mount's size= syntax) over dir, keeping what dir holds (the
  // identity files the fixture made there: regular files at its top). Before any daemon uses
  // dir; unmounted after they stop.
  void mount_tmpfs(const std::string& dir, const char* size) {
    const std::string saved = scratch_dir("saved-" + std::to_string(tmpfs_.size()));
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      ASSERT_TRUE(e.is_regular_file()) << e.path() << " is in the way of the tmpfs";
      std::filesystem::copy_file(e.path(), saved / e.path().filename());
    }
    const std::string options = std::string("mode=0755,size=") + size;
    if (::mount("tmpfs", dir.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, options.c_str()) != 0) {
      GTEST_SKIP() << "cannot mount a tmpfs at " << dir << ": " << std::strerror(errno);
    }
    tmpfs_.push_back(dir);
    for (const auto& e : std::filesystem::directory_iterator(saved)) {
      std::filesystem::copy_file(e.path(), std::filesystem::path(dir) / e.path().filename());
    }
  }

  // Writes dir/filler until the disk is full; returns its path.
  std::string fill(const std::string& dir) {
    std::string path = dir + "/filler";
    UniqueFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    EXPECT_TRUE(fd) << path << ": " << std::strerror(errno);
    std::string block(1 << 16, 'x');
    while (fd) {
      ssize_t n = write(fd.get(), block.data(), block.size());
      if (n > 0) continue;
      EXPECT_EQ(errno, ENOSPC) << std::strerror(errno);
      break;
    }
    return path;
  }

  // The newest run in `runs` that failed because the disk is full, if any.
  static std::optional<Json> disk_full_run(const Json& runs) {
    for (const auto& run : runs) {
      std::string error = run.value("error", Json()).is_string() ? run["error"].get<std::string>() : "";
      if (run.value("status", "") == "failed" && error.find("full") != std::string::npos) {
        return run;
      }
    }
    return std::nullopt;
  }

  // Lines of `name`'s log that contain `text`.
  size_t log_lines(const std::string& name, const std::string& text) const {
    std::istringstream in(log_text(name));
    size_t n = 0;
    for (std::string line; std::getline(in, line);) n += line.find(text) != std::string::npos;
    return n;
  }

  // Waits until `name` says it waits for space on a full disk (common/full_disk.h).
  ::testing::AssertionResult wait_waiting_for_space(const std::string& name) {
    testutil::wait_until([&] { return expired() || log_lines(name, kWaiting) > 0; }, 60s, 100ms);
    if (log_lines(name, kWaiting) > 0) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << name << " never waited for space:\n"
                                         << log_text(name);
  }

  // Frees the disk of `name` (removes filler), then expects every copy to converge, and `name`
  // to have resumed because space came back, not on a timer.
  void free_and_converge(const std::string& name, const std::string& filler) {
    ASSERT_EQ(unlink(filler.c_str()), 0) << std::strerror(errno);
    EXPECT_EQ(wait_converged(), "");
    EXPECT_GE(log_lines(name, "space freed on"), 1u) << log_text(name);
  }

  static constexpr const char* kWaiting = "resuming once space is freed";
  static constexpr const char* kNoSpace = "No space left on device";

  // What the application does while a disk is full: new data, an append, an overwrite in the
  // middle, a punched hole, a truncate, a rename and the full mix of namespace operations.
  void change_everything() {
    write_big_file(src("big"), 3 * kMiB, 70);
    append(src("grows"), random_string(300 << 10, 71));
    write_at(src("sparse"), 1 * kMiB + 5000, random_string(70000, 72));
    UniqueFd fd(open(src("sparse").c_str(), O_RDWR | O_CLOEXEC));
    ASSERT_TRUE(fd) << std::strerror(errno);
    ASSERT_EQ(fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 64 << 10, 256 << 10),
              0)
        << std::strerror(errno);
    truncate_to(src("shrinks"), 12345);
    ASSERT_EQ(rename(src("grows").c_str(), src("grown").c_str()), 0) << std::strerror(errno);
    apply_mix(src(), 50);
  }

  // A tmpfs of `size` at dir; then the files change_everything() changes, every daemon started
  // and all copies converged.
  void start_on_tmpfs(const std::string& dir, const char* size) {
    mount_tmpfs(dir, size);
    if (IsSkipped() || HasFatalFailure()) return;
    put(src("grows"), random_string(100 << 10, 80));
    write_big_file(src("sparse"), 2 * kMiB, 81);
    write_big_file(src("shrinks"), 1 * kMiB, 82);
    ASSERT_TRUE(start_all());
    ASSERT_EQ(wait_converged(), "");
  }

  // Fills dir's disk, changes everything, and waits until `name` waits for space; returns the
  // filler to remove.
  std::string fill_and_change(const std::string& dir, const std::string& name) {
    std::string filler = fill(dir);
    change_everything();
    if (!HasFatalFailure()) {
      EXPECT_TRUE(wait_waiting_for_space(name));
    }
    return filler;
  }

 private:
  std::vector<std::string> tmpfs_;
};

TEST_F(DiskFullTest, RunsThatFailWhileTheCatalogsDiskIsFullStayInTheHistory) {
  mount_tmpfs(state_dir(), "16m");
  if (IsSkipped() || HasFatalFailure()) return;
  ASSERT_TRUE(start_all("2s", /*with_replicators=*/false));
  std::string why;
  ASSERT_TRUE(wait_next_run({}, 60s, &why)) << why;

  const std::string filler = fill(state_dir());
  for (int i = 0; i < kNewFiles; ++i) put(src("new" + std::to_string(i)), "");

  // A run fails for the full catalog, listed with its reason and the files changed so far. (The
  // node's batch cannot commit either — backupd cannot save `state` — so it is never
  // acknowledged and the later files wait on the node: at least the first one is counted.)
  std::optional<Json> failed;
  testutil::wait_until(
      [&] {
        auto all = runs(&why);
        if (all) failed = disk_full_run(*all);
        return expired() || (failed && failed->value("changed_files", 0) >= 1);
      },
      60s, 300ms);
  ASSERT_TRUE(failed) << "no run failed for the full disk: " << why;
  EXPECT_GE(failed->value("changed_files", 0), 1) << failed->dump();
  EXPECT_TRUE(failed->at("snapshot").is_null()) << failed->dump();

  // Space returns: the node's batch commits, and the next snapshot holds those changes and
  // counts them (the failed runs did not take the counts).
  ASSERT_EQ(unlink(filler.c_str()), 0) << std::strerror(errno);
  auto known = run_ids(&why);
  put(src("after"), "space is back\n");
  std::optional<Json> written;
  testutil::wait_until(
      [&] {
        auto all = runs(&why);
        if (!all) return expired();
        for (const auto& run : *all) {
          if (!known.count(run.at("id").dump()) && run.value("status", "") == "written") written = run;
        }
        return expired() || written.has_value();
      },
      90s, 300ms);
  ASSERT_TRUE(written) << "no snapshot written once space returned: " << why;
  EXPECT_GE(written->value("changed_files", 0), kNewFiles + 1) << written->dump();
  ASSERT_EQ(wait_converged(), "");

  // The failed runs were stored, not only shown from memory: they survive a restart.
  uint16_t port = this->port();
  ASSERT_TRUE(stop_server());
  ASSERT_TRUE(start_server(port));
  auto after = runs(&why);
  ASSERT_TRUE(after) << why;
  auto kept = disk_full_run(*after);
  ASSERT_TRUE(kept) << "the failed runs are gone after a restart: " << after->dump(2);
  EXPECT_NE(kept->value("error", "").find("full"), std::string::npos) << kept->dump();
  EXPECT_GE(kept->value("changed_files", 0), 1) << kept->dump();
}

TEST_F(DiskFullTest, DataWrittenWhileTheMirrorsDiskIsFullArrivesOnceSpaceReturns) {
  start_on_tmpfs(state_dir(), "32m");
  if (IsSkipped() || HasFatalFailure()) return;
  const std::string filler = fill_and_change(state_dir(), "backupd");
  if (HasFailure()) return;
  EXPECT_TRUE(backupd()->alive());
  // Each session that failed on the full disk waited for space before the next: the node was
  // not made to resend its batch into the full disk over and over.
  EXPECT_LE(log_lines("backupd", kNoSpace), log_lines("backupd", kWaiting) + 1)
      << log_text("backupd");

  free_and_converge("backupd", filler);
}

TEST_F(DiskFullTest, AReplicasFullDiskHoldsBackThatReplicaOnly) {
  // Room for placement to choose it: the volume plus placement's kMinFreeBytes (64 MiB).
  start_on_tmpfs(replica_root(0), "96m");
  if (IsSkipped() || HasFatalFailure()) return;
  const std::string filler = fill_and_change(replica_root(0), "r1");
  if (HasFailure()) return;
  // The mirror and the other replica keep up meanwhile.
  std::string diff;
  testutil::wait_until(
      [&] {
        diff = testutil::compare_trees(src(), mirror());
        if (diff.empty()) diff = testutil::compare_trees(src(), replica(1));
        return expired() || diff.empty();
      },
      90s, 200ms);
  EXPECT_EQ(diff, "");
  EXPECT_TRUE(replicator(0)->alive());
  // backupd's side of each failed session: as many as r1 waited for space, give or take the
  // one in progress.
  EXPECT_LE(log_lines("backupd", kNoSpace), log_lines("r1", kWaiting) + 1) << log_text("backupd");

  free_and_converge("r1", filler);
}

TEST_F(DiskFullTest, TheApplicationsFullDiskIsTheApplicationsErrorAndCopiesFollowWhatSucceeded) {
  start_on_tmpfs(src(), "16m");
  if (IsSkipped() || HasFatalFailure()) return;

  // A file grows through the mount until the application's disk is full: ENOSPC, as without
  // backupfs, after a last short write or none.
  UniqueFd fd(open(src("until-full").c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd) << std::strerror(errno);
  const std::string block = random_string(100000, 90);  // not page-aligned: a short last write
  int err = 0;
  for (int i = 0; i < 1000 && err == 0; ++i) {
    ssize_t n = write(fd.get(), block.data(), block.size());
    if (n < 0) err = errno;
  }
  EXPECT_EQ(err, ENOSPC) << std::strerror(err);
  const FullDisk full(src());
  fd.reset();
  EXPECT_EQ(wait_converged(), "");

  // Space returns to the application; everything it does from there on is shipped as usual.
  // Not at the unlink itself: as on any FUSE filesystem the release of the closed file comes
  // after close(2) returned, and backupfs (and its keeper, for a file open at its unlink) lets
  // go of the file then. The wait is on the space itself, so a file held for good fails here.
  ASSERT_EQ(unlink(src("until-full").c_str()), 0) << std::strerror(errno);
  ASSERT_TRUE(testutil::wait_until([&] { return full.space_back(); }, 30s, 20ms))
      << "the unlinked file's space did not come back";
  change_everything();
  if (HasFatalFailure()) return;
  EXPECT_EQ(wait_converged(), "");
}

}  // namespace
}  // namespace bkp::it
