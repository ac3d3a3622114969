// Failures are recorded where operators look (issue 9, item 6), on a real full disk: backupd's
// state directory is a small tmpfs this test mounts, then fills with a filler file.
//
// While the disk is full, scheduled runs fail because the catalog cannot insert their rows;
// `bkptool history` lists them anyway (backupd keeps them in memory), with the reason and with
// the changes the node made meanwhile (empty files: creating them takes no space on tmpfs, so the
// mirror still gets them). Once space returns the next run writes a snapshot that counts those
// changes too (a failed run hands its counts on), and after a restart of backupd the failed runs
// are still in the history: they were stored in the catalog, not only shown from memory.
#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/unique_fd.h"
#include "tests/integration/control.h"
#include "tests/integration/workload.h"
#include "tests/testutil/wait.h"

namespace bkp::it {
namespace {

constexpr int kNewFiles = 5;

class DiskFullTest : public ControlTest {
 protected:
  void SetUp() override {
    ControlTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    // backupd's identity (the one the node was told) goes onto the tmpfs too.
    const std::string identity = state_dir() + "/identity.pem";
    const std::string saved = scratch_dir("identity") + "/identity.pem";
    std::filesystem::copy_file(identity, saved);
    if (::mount("tmpfs", state_dir().c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=0755") != 0) {
      GTEST_SKIP() << "cannot mount a tmpfs at " << state_dir() << ": " << std::strerror(errno);
    }
    mounted_ = true;
    std::filesystem::copy_file(saved, identity);
  }

  void TearDown() override {
    ControlTest::TearDown();  // stops backupd first: nothing holds the tmpfs any more
    if (!mounted_) return;
    if (::umount(state_dir().c_str()) != 0) {
      ADD_FAILURE() << "umount " << state_dir() << ": " << std::strerror(errno);
      ::umount2(state_dir().c_str(), MNT_DETACH);
    }
  }

  // Writes a filler file until the tmpfs is full.
  void fill_disk() {
    UniqueFd fd(open(filler().c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    ASSERT_TRUE(fd) << std::strerror(errno);
    std::string block(1 << 16, 'x');
    while (true) {
      ssize_t n = write(fd.get(), block.data(), block.size());
      if (n > 0) continue;
      ASSERT_EQ(errno, ENOSPC) << std::strerror(errno);
      break;
    }
  }
  std::string filler() const { return state_dir() + "/filler"; }

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

 private:
  bool mounted_ = false;
};

TEST_F(DiskFullTest, RunsThatFailWhileTheCatalogsDiskIsFullStayInTheHistory) {
  ASSERT_TRUE(start_all("2s", /*with_replicators=*/false));
  std::string why;
  ASSERT_TRUE(wait_next_run({}, 60s, &why)) << why;

  fill_disk();
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
  ASSERT_EQ(unlink(filler().c_str()), 0) << std::strerror(errno);
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

}  // namespace
}  // namespace bkp::it
