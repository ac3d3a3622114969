// Convergence (DESIGN.md invariant 3): after a mix of every kind of change an application makes,
// the mirror and both replicas are identical to the source: content, type, mode, owner, symlink
// targets, hard links and mtimes. And backupfs itself is a faithful passthrough: the mount
// shows exactly what the same operations produce on a plain directory.
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <thread>

#include "tests/integration/cluster.h"
#include "tests/integration/workload.h"

namespace bkp::it {
namespace {

constexpr uint64_t kBigFile = 200 * kMiB;

class SyncTest : public ClusterTest {};

// Allocated bytes of a file (sparse files must stay sparse in every copy).
uint64_t allocated(const std::string& path) {
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) return ~uint64_t{0};
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

TEST_F(SyncTest, FullMixConvergesEverywhere) {
  make_preexisting_tree(src());
  make_preexisting_tree(ref());
  ASSERT_TRUE(start_all());

  apply_mix(src(), 1000);
  apply_mix(ref(), 1000);
  write_big_file(src("big.bin"), kBigFile, 7000);
  write_big_file(ref("big.bin"), kBigFile, 7000);

  // What the application sees through the mount is what a plain directory would hold.
  EXPECT_EQ(compare_trees(ref(), src(), {.mtime = false}), "");

  ASSERT_EQ(wait_converged(), "");

  for (const std::string& copy : {mirror(), replica(0), replica(1)}) {
    EXPECT_LT(allocated(copy + "/data/sparse.bin"), 4 * kMiB) << copy << " is not sparse";
    EXPECT_LT(allocated(copy + "/pre/sparse"), 4 * kMiB) << copy << " is not sparse";
  }
}

// A second round on an already synchronised volume: changes to existing entries (not only
// creations) reach every copy, including deletions of whole subtrees.
TEST_F(SyncTest, LaterChangesToExistingEntriesConverge) {
  ASSERT_TRUE(start_all());
  apply_mix(src(), 100);
  ASSERT_EQ(wait_converged(), "");

  write_at(src("data/offsets.bin"), 2000, "changed in round two");
  truncate_to(src("data/trunc.bin"), 10);
  // A read-only open with O_TRUNC empties the file on Linux; backupfs once left it unrecorded.
  ASSERT_GE(::close(::open(src("data/overwrite.txt").c_str(), O_RDONLY | O_TRUNC)), 0);
  ASSERT_EQ(slurp(src("data/overwrite.txt")), "") << "the open did not truncate";
  ASSERT_EQ(rename(src("dir2/sub").c_str(), src("moved-sub").c_str()), 0);
  ASSERT_EQ(rename(src("links/orig").c_str(), src("data/log.txt").c_str()), 0);
  std::filesystem::remove_all(src("many"));
  ASSERT_EQ(chmod(src("data/sparse.bin").c_str(), 0444), 0);
  ASSERT_EQ(chown(src("links/hard").c_str(), 65534, 0), 0);
  set_mtime(src("data"), 1100000000, 42);

  ASSERT_EQ(wait_converged(), "");
}

// A process whose working directory is removed (by itself or another) still stats it (no
// links left) and lists it (empty), as on a plain directory: backupfs once answered ESTALE, as
// no file handle opens a removed directory. The directory is made through the mount and never
// looked at before its removal, so backupfs holds no descriptor of it beforehand.
TEST_F(SyncTest, ARemovedWorkingDirectoryAnswersAsOnAPlainDirectory) {
  ASSERT_TRUE(start_all("1h", /*with_replicators=*/false));
  for (const std::string& root : {src(), ref()}) {
    const std::string dir = root + "/cwd-removed";
    ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0) << dir;
    pid_t child = ::fork();
    if (child == 0) {
      // 10: chdir, 11: rmdir, 12: stat, 13: links left, 14: opendir, 15: entries listed.
      if (::chdir(dir.c_str()) != 0) ::_exit(10);
      if (::rmdir(dir.c_str()) != 0) ::_exit(11);
      struct stat st {};
      if (::stat(".", &st) != 0) ::_exit(12);
      if (st.st_nlink != 0 || !S_ISDIR(st.st_mode)) ::_exit(13);
      DIR* d = ::opendir(".");
      if (d == nullptr) ::_exit(14);
      int names = 0;
      while (dirent* e = ::readdir(d)) {
        names += std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0;
      }
      ::closedir(d);
      ::_exit(names == 0 ? 0 : 15);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0) << "in " << root << " (see the codes in the test)";
  }
  ASSERT_EQ(wait_converged(), "");
}

// The pattern of editors and config writers: write a temporary file, rename it over the real
// one, while readers open the real one. Through FUSE, LOOKUP and OPEN are two requests, so an
// OPEN can arrive for the file the rename just replaced (gone from the backing tree); backupfs
// answers ESTALE and the kernel walks the path again, as open(2) of a plain directory never
// fails there. Every open must succeed and read one whole version.
TEST_F(SyncTest, OpensRacingARenameOverTheFileNeverFail) {
  ASSERT_TRUE(start_all());
  put(src("cur"), "version 0");
  constexpr int kRounds = 2000;
  std::atomic<bool> done{false};
  std::thread renamer([&] {
    for (int i = 1; i <= kRounds; ++i) {
      put(src("tmp"), "version " + std::to_string(i));
      must(rename(src("tmp").c_str(), src("cur").c_str()), "rename tmp cur");
    }
    done = true;
  });
  int opens = 0, failures = 0;
  std::string bad;
  while (!done || opens < kRounds) {
    int fd = open(src("cur").c_str(), O_RDONLY | O_CLOEXEC);
    ++opens;
    if (fd < 0) {
      ++failures;
      bad = std::strerror(errno);
      continue;
    }
    char buf[32] = {};
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n < 8 || std::string(buf).rfind("version ", 0) != 0) {
      ++failures;
      bad = "read \"" + std::string(buf) + "\"";
    }
  }
  renamer.join();
  EXPECT_EQ(failures, 0) << "of " << opens << " opens; last: " << bad;
  ASSERT_EQ(wait_converged(), "");
}

}  // namespace
}  // namespace bkp::it
