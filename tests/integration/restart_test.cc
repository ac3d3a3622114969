// Restarts that cost only what changed (issue 9, items 3 and 4). A backupfs that was killed -9
// and changed behind its back while down, and a backupd killed -9, both come back to a tree
// their receivers already hold: the reconcile by manifest (common/stream/reconcile.h) must find
// every change made meanwhile — content rewritten with its mtime put back, chmod, xattrs set
// and removed, renames, deletions, new entries — and ship only those. The byte counts are the
// point: before the reconcile each restart re-sent the whole volume.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "tests/integration/cluster.h"
#include "tests/integration/workload.h"

namespace bkp::it {
namespace {

constexpr int kFiles = 40;
constexpr uint64_t kFileSize = 256 * 1024;

class RestartTest : public ClusterTest {
 protected:
  std::string file(int i) { return src("data/f" + std::to_string(i)); }

  // 40 files of 256 KiB (the even ones with an xattr), a 24 MiB file, a symlink with two
  // names and a fifo: about 34 MiB.
  void make_dataset() {
    mkdirs(src("data"));
    for (int i = 0; i < kFiles; ++i) {
      put(file(i), random_string(kFileSize, 100 + i));
      if (i % 2 == 0) set_xattr(file(i), "user.k", "v" + std::to_string(i));
    }
    write_big_file(src("data/big.bin"), 24 * kMiB, 9);
    must(symlink("f1", src("data/sym").c_str()), "symlink");
    must(link(src("data/sym").c_str(), src("data/sym2").c_str()), "link to a symlink");
    must(mkfifo(src("data/fifo").c_str(), 0640), "mkfifo");
  }

  uint64_t data_bytes() {
    auto stats = server_stats();
    return stats ? (*stats)["data_bytes"] : 0;
  }

  // Sum of the data bytes the reconciles in backupd's log (from `from` on) planned to ship.
  static uint64_t reconciled_bytes(const std::string& log, size_t from, int* count) {
    uint64_t sum = 0;
    *count = 0;
    for (size_t at = log.find("reconcile of", from); at != std::string::npos;
         at = log.find("reconcile of", at + 1)) {
      std::string line = log.substr(at, log.find('\n', at) - at);
      size_t files = line.find(" files, ");
      if (files == std::string::npos) continue;
      sum += std::stoull(line.substr(files + 8));
      ++*count;
    }
    return sum;
  }
};

TEST_F(RestartTest, BackupfsKilledAndChangedWhileDownShipsOnlyTheChanges) {
  ASSERT_TRUE(start_all());
  make_dataset();
  ASSERT_EQ(wait_converged(), "");
  uint64_t before = data_bytes();
  ASSERT_GE(before, 34 * kMiB);

  mount()->process().signal(SIGKILL);
  auto gone = mount()->unmount();
  ASSERT_TRUE(gone) << gone.error().message;
  ASSERT_FALSE(mount()->mounted());

  // Behind backupfs's back, on the bare directory:
  write_at(file(3), 1000, "changed in place");          // same size, new content
  struct stat st {};
  ASSERT_EQ(lstat(file(4).c_str(), &st), 0);
  write_at(file(4), 5000, "rewritten, mtime put back");  // only ctime tells
  set_mtime(file(4), st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
  put(src("data/new.bin"), random_string(100 * 1024, 7));
  must(unlink(file(5).c_str()), "unlink");
  set_xattr(file(7), "user.added", "while down");
  remove_xattr(file(8), "user.k");
  must(chmod(file(9).c_str(), 0600), "chmod");
  must(rename(file(11).c_str(), src("data/f11.renamed").c_str()), "rename");
  mkdirs(src("data/newdir"));
  must(symlink("../f2", src("data/newdir/sym").c_str()), "symlink");
  must(unlink(src("data/sym2").c_str()), "unlink a symlink's second name");
  must(chmod(src("data/big.bin").c_str(), 0640), "chmod");
  write_at(src("data/big.bin"), 10 * kMiB + 5, "one block of 24 MiB");
  must(rename(file(12).c_str(), file(13).c_str()), "rename over another file");

  ASSERT_TRUE(mount_source(node_port()));
  ASSERT_EQ(wait_converged(), "");
  // Only the 128 KiB blocks that differ go (stream::kDigestBlock): one in f3, one in f4, one in
  // big.bin, plus the new file. Files whose ctime moved without new content (xattr, chmod,
  // renames) are verified by digests and cost no data.
  constexpr uint64_t kBlock = 128 * 1024;
  uint64_t shipped = data_bytes() - before;
  EXPECT_EQ(shipped, 3 * kBlock + 100 * 1024) << "the restart shipped other than what changed";
  std::string log = log_text("backupfs");
  EXPECT_NE(log.find("entries already on backupd"), std::string::npos) << log;
  EXPECT_NE(log.find("verified by block digests"), std::string::npos) << log;
}

TEST_F(RestartTest, BackupdKilledCostsTheReplicasOnlyWhatTheyLack) {
  ASSERT_TRUE(start_all());
  make_dataset();
  ASSERT_EQ(wait_converged(), "");
  uint16_t port = this->port();
  ASSERT_TRUE(kill_server());
  put(src("data/while-away.bin"), random_string(100 * 1024, 8));  // through the mount
  size_t from = log_text("backupd").size();
  ASSERT_TRUE(start_server(port));
  ASSERT_EQ(wait_converged(), "");
  int reconciles = 0;
  uint64_t bytes = reconciled_bytes(log_text("backupd"), from, &reconciles);
  EXPECT_EQ(reconciles, 2) << "one reconcile per replica";
  // Each replica lacks at most the file written while backupd was away (it may also come
  // through the live stream after the reconcile).
  EXPECT_LE(bytes, 2 * 100 * 1024) << log_text("backupd").substr(from);
}

}  // namespace
}  // namespace bkp::it
