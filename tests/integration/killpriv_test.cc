// Set-id bits and file capabilities through the mount (pjdfstest-style). backupfs negotiates
// FUSE_HANDLE_KILLPRIV_V2, so the kernel no longer clears them itself: backupfs must, exactly as
// the VFS of a plain directory does. Every case runs the same operations, as the same users, on
// src (the mount) and on ref (a plain directory) and expects the same modes and xattrs, then the
// same in the mirror and both replicas, also for capabilities set before the mount. A test counts FUSE requests with the kernel's
// fuse_request_send tracepoint: fsync'd writes must cost no GETXATTR any more.
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <vector>

#include "tests/integration/cluster.h"

namespace bkp::it {
namespace {

constexpr uid_t kNobody = 65534;
constexpr char kCapability[] = "security.capability";

// A valid VFS_CAP_REVISION_2 blob: effective, permitted CAP_NET_BIND_SERVICE.
const std::array<uint32_t, 5> kCapabilityBlob = {0x02000001, 1u << 10, 0, 0, 0};

// Runs fn in a child process with uid, gid 65534 and the supplementary groups `groups` (or as
// root when as_root). Returns fn's result (0 or an errno), or -1 if the child failed otherwise.
int run_as(bool as_root, const std::function<int()>& fn, const std::vector<gid_t>& groups = {}) {
  pid_t pid = ::fork();
  if (pid == 0) {
    if (!as_root && (::setgroups(groups.size(), groups.data()) != 0 ||
                     ::setresgid(kNobody, kNobody, kNobody) != 0 ||
                     ::setresuid(kNobody, kNobody, kNobody) != 0)) {
      ::_exit(255);
    }
    ::_exit(fn());
  }
  int status = 0;
  if (pid < 0 || ::waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}
int as_nobody(const std::function<int()>& fn) { return run_as(false, fn); }
int as_root(const std::function<int()>& fn) { return run_as(true, fn); }

int append_byte(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND);
  if (fd < 0) return errno;
  int err = ::write(fd, "x", 1) == 1 ? 0 : errno;
  ::close(fd);
  return err;
}

int open_truncating(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_TRUNC);
  if (fd < 0) return errno;
  ::close(fd);
  return 0;
}

// Changes content without a WRITE (copies its first bytes after its end): the kernel removes
// privileges itself first, which under KILLPRIV_V2 reaches backupfs as a SETATTR of nothing.
int copy_range_onto_itself(const std::string& path) {
  int in = ::open(path.c_str(), O_RDONLY);
  int out = ::open(path.c_str(), O_WRONLY);
  int err = in < 0 || out < 0 ? errno : 0;
  loff_t from = 0, to = 4096;
  if (err == 0 && ::copy_file_range(in, &from, out, &to, 4, 0) != 4) err = errno ? errno : EIO;
  if (in >= 0) ::close(in);
  if (out >= 0) ::close(out);
  return err;
}

// A regular file with content, owned by uid:gid, with mode (set after the chown, which would
// clear set-id bits).
void make_file(const std::string& path, uid_t uid, gid_t gid, mode_t mode) {
  std::ofstream(path) << "content\n";
  ASSERT_EQ(::chown(path.c_str(), uid, gid), 0) << path;
  ASSERT_EQ(::chmod(path.c_str(), mode), 0) << path;
}

mode_t mode_of(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return 0177777;
  return st.st_mode & 07777;
}

bool has_capability(const std::string& path) {
  return ::getxattr(path.c_str(), kCapability, nullptr, 0) > 0;
}

class KillPrivTest : public ClusterTest {
 protected:
  // Lets user 65534 reach src and ref (the test's temporary directory is mkdtemp's 0700).
  void let_nobody_in() {
    for (const std::string& root : {src(), ref()}) {
      ASSERT_EQ(::chmod(root.substr(0, root.rfind('/')).c_str(), 0711), 0);
      ASSERT_EQ(::chmod(root.c_str(), 0755), 0);
    }
  }
  // Runs setup and then op on root (src, then ref) and expects mode `expected` on both.
  void expect_mode(const std::string& name, const std::function<void(const std::string&)>& setup,
                   const std::function<int(const std::string&)>& op, mode_t expected) {
    for (const std::string& root : {src(), ref()}) {
      const std::string path = root + "/" + name;
      setup(path);
      EXPECT_EQ(op(path), 0) << name << " in " << root;
      EXPECT_EQ(mode_of(path), expected) << std::oct << name << " in " << root;
    }
  }
};

TEST_F(KillPrivTest, SetIdBitsAndCapabilitiesAreDroppedAsOnAPlainDirectory) {
  ASSERT_TRUE(start_all());
  EXPECT_NE(log_text("backupfs").find("FUSE_HANDLE_KILLPRIV_V2 negotiated"), std::string::npos)
      << "backupfs did not negotiate FUSE_HANDLE_KILLPRIV_V2";
  let_nobody_in();

  auto owned_by_nobody = [](mode_t mode) {
    return [mode](const std::string& p) { make_file(p, kNobody, kNobody, mode); };
  };
  auto by_nobody = [](int (*op)(const std::string&)) {
    return [op](const std::string& p) { return as_nobody([&] { return op(p); }); };
  };
  auto chown_by_root = [](const std::string& p) {
    return as_root([&] { return ::chown(p.c_str(), kNobody, kNobody) == 0 ? 0 : errno; });
  };
  auto truncate_to_one = [](const std::string& p) {
    return ::truncate(p.c_str(), 1) == 0 ? 0 : errno;
  };

  // Write: the owner (no CAP_FSETID) loses set-uid, and set-gid of a group-executable file.
  expect_mode("write-suid", owned_by_nobody(06755), by_nobody(append_byte), 0755);
  // Root (CAP_FSETID) keeps both.
  expect_mode("write-root", owned_by_nobody(06755),
              [](const std::string& p) { return as_root([&] { return append_byte(p); }); },
              06755);
  // Set-gid without group-execute is kept for a writer in the file's group...
  expect_mode("write-sgid-noexec", owned_by_nobody(02644), by_nobody(append_byte), 02644);
  // ...and dropped for one outside it.
  expect_mode("write-sgid-other-group",
              [](const std::string& p) { make_file(p, kNobody, 0, 02644); },
              by_nobody(append_byte), 0644);
  // Truncate, by truncate(2) and by open(O_TRUNC).
  expect_mode("truncate", owned_by_nobody(06755), by_nobody(truncate_to_one), 0755);
  expect_mode("open-trunc", owned_by_nobody(06755), by_nobody(open_truncating), 0755);
  expect_mode("copy-file-range", owned_by_nobody(06755), by_nobody(copy_range_onto_itself),
              0755);
  // Chown, even by root, clears set-uid and group-executable set-gid of a regular file...
  expect_mode("chown-file", [](const std::string& p) { make_file(p, 0, 0, 06755); },
              chown_by_root, 0755);
  expect_mode("chown-sgid-noexec", [](const std::string& p) { make_file(p, 0, 0, 02644); },
              chown_by_root, 02644);
  // ...but not of a directory.
  expect_mode("chown-dir",
              [](const std::string& p) {
                ASSERT_EQ(::mkdir(p.c_str(), 0755), 0);
                ASSERT_EQ(::chmod(p.c_str(), 06755), 0);
              },
              chown_by_root, 06755);

  // A file capability goes with a write by its owner.
  for (const std::string& root : {src(), ref()}) {
    const std::string path = root + "/capability";
    make_file(path, kNobody, kNobody, 0755);
    ASSERT_EQ(::setxattr(path.c_str(), kCapability, kCapabilityBlob.data(),
                         sizeof(kCapabilityBlob), 0), 0) << std::strerror(errno);
    ASSERT_TRUE(has_capability(path)) << path;
    EXPECT_EQ(as_nobody([&] { return append_byte(path); }), 0);
    EXPECT_FALSE(has_capability(path)) << path;
  }

  EXPECT_EQ(compare_trees(ref(), src(), {.mtime = false}), "");
  ASSERT_EQ(wait_converged(), "");
}

// New entries in a set-group-id directory of a group (4321) the creator may or may not be in:
// the modes and groups a plain directory gives, in the reply (what stat shows at once, from the
// kernel's cache) and on disk. backupfs once reported a subdirectory without the set-group-id
// bit it inherited, and dropped the bit a member of the group asked for on a new file.
TEST_F(KillPrivTest, EntriesMadeInASetGroupIdDirectoryGetWhatAPlainDirectoryGives) {
  ASSERT_TRUE(start_all());
  let_nobody_in();
  constexpr gid_t kGroup = 4321;
  for (const std::string& root : {src(), ref()}) {
    const std::string shared = root + "/shared";
    ASSERT_EQ(::mkdir(shared.c_str(), 0777), 0);
    ASSERT_EQ(::chown(shared.c_str(), 0, kGroup), 0);
    ASSERT_EQ(::chmod(shared.c_str(), 02777), 0);
  }
  struct Case {
    const char* name;
    bool member;
    mode_t asked;  // a directory when S_IFDIR is in it
    mode_t expected;
  };
  const Case cases[] = {
      {"dir-by-member", true, S_IFDIR | 0755, 02755},
      {"dir-by-stranger", false, S_IFDIR | 0755, 02755},
      {"file-by-member", true, 02755, 02755},
      {"file-by-stranger", false, 02755, 0755},           // the kernel drops it (not a member)
      {"noexec-file-by-stranger", false, 02644, 02644},   // not executable: kept
  };
  ::umask(022);
  for (const Case& c : cases) {
    for (const std::string& root : {src(), ref()}) {
      const std::string path = root + "/shared/" + c.name;
      auto make = [&] {
        if (S_ISDIR(c.asked)) return ::mkdir(path.c_str(), c.asked & 07777) == 0 ? 0 : errno;
        int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, c.asked & 07777);
        if (fd < 0) return errno;
        ::close(fd);
        return 0;
      };
      ASSERT_EQ(run_as(false, make, c.member ? std::vector<gid_t>{kGroup} : std::vector<gid_t>{}),
                0)
          << path;
      struct stat st {};
      ASSERT_EQ(::lstat(path.c_str(), &st), 0) << path;
      EXPECT_EQ(st.st_mode & 07777, c.expected) << std::oct << path;
      EXPECT_EQ(st.st_gid, kGroup) << path;
      EXPECT_EQ(st.st_uid, kNobody) << path;
    }
  }
  EXPECT_EQ(compare_trees(ref(), src(), {.mtime = false}), "");
  ASSERT_EQ(wait_converged(), "");
}

// A truncating open that fails truncates nothing and keeps the capability: here the program is
// running (started from the backing file before the mount), so the backing open fails with
// ETXTBSY, as on a plain directory. backupfs must not have dropped the capability first.
TEST_F(KillPrivTest, ATruncatingOpenThatFailsKeepsTheCapability) {
  std::vector<pid_t> running;
  struct Reap {
    std::vector<pid_t>& pids;
    ~Reap() {
      for (pid_t pid : pids) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
      }
    }
  } reap{running};
  for (const std::string& root : {src(), ref()}) {
    const std::string prog = root + "/prog";
    std::filesystem::copy_file("/bin/sleep", prog);
    ASSERT_EQ(::setxattr(prog.c_str(), kCapability, kCapabilityBlob.data(),
                         sizeof(kCapabilityBlob), 0), 0) << std::strerror(errno);
    pid_t pid = ::fork();
    if (pid == 0) {
      ::execl(prog.c_str(), "prog", "60", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ASSERT_GT(pid, 0);
    running.push_back(pid);
    auto exec_done = [&] {
      std::error_code ec;
      return std::filesystem::read_symlink("/proc/" + std::to_string(pid) + "/exe", ec) == prog;
    };
    for (int i = 0; i < 5000 && !exec_done(); ++i) ::usleep(1000);  // bounded: 5 s
    ASSERT_TRUE(exec_done()) << prog << " never started";
  }
  ASSERT_TRUE(start_all());
  ASSERT_EQ(wait_converged(), "");
  for (const std::string& root : {src(), ref()}) {
    const std::string prog = root + "/prog";
    int fd = ::open(prog.c_str(), O_WRONLY | O_TRUNC);
    EXPECT_EQ(fd < 0 ? errno : 0, ETXTBSY) << prog;
    if (fd >= 0) ::close(fd);
    EXPECT_TRUE(has_capability(prog)) << prog;
  }
  EXPECT_EQ(compare_trees(ref(), src(), {.mtime = false}), "");
  ASSERT_EQ(wait_converged(), "");
}

// A truncate, a write, a copy into the file or a fallocate drops a file capability whoever
// makes it, root included, and the copies must lose it too. backupfs's backing calls run as
// root and dropped it silently where no kill was asked for (an O_TRUNC open, a write by root),
// so the mirror and the replicas kept a capability the source had lost. Each file's capability reaches the mirror
// first; then the operation, on src and on ref alike.
TEST_F(KillPrivTest, ACapabilityThatATruncateOrAWriteDropsIsDroppedInTheCopiesToo) {
  ASSERT_TRUE(start_all());
  let_nobody_in();
  auto truncating_open = [](int flags) {
    return [flags](const std::string& p) {
      int fd = ::open(p.c_str(), flags);
      if (fd < 0) return errno;
      ::close(fd);
      return 0;
    };
  };
  const std::map<std::string, std::function<int(const std::string&)>> cases = {
      {"rdonly-trunc-by-root", truncating_open(O_RDONLY | O_TRUNC)},
      {"wronly-trunc-by-root", truncating_open(O_WRONLY | O_TRUNC)},
      {"wronly-trunc-by-owner",
       [&](const std::string& p) {
         return as_nobody([&] { return truncating_open(O_WRONLY | O_TRUNC)(p); });
       }},
      {"append-by-root", append_byte},
      {"truncate-by-root",
       [](const std::string& p) { return ::truncate(p.c_str(), 3) == 0 ? 0 : errno; }},
      {"copy-range-by-root", copy_range_onto_itself},
      {"fallocate-by-root",
       [](const std::string& p) {
         int fd = ::open(p.c_str(), O_WRONLY);
         if (fd < 0) return errno;
         int err = ::fallocate(fd, 0, 0, 65536) == 0 ? 0 : errno;
         ::close(fd);
         return err;
       }},
  };
  for (const std::string& root : {src(), ref()}) {
    for (const auto& [name, op] : cases) {
      const std::string path = root + "/" + name;
      make_file(path, kNobody, kNobody, 0755);
      ASSERT_EQ(::setxattr(path.c_str(), kCapability, kCapabilityBlob.data(),
                           sizeof(kCapabilityBlob), 0), 0) << std::strerror(errno);
    }
  }
  ASSERT_EQ(wait_converged(), "");
  for (const std::string& root : {src(), ref()}) {
    for (const auto& [name, op] : cases) {
      const std::string path = root + "/" + name;
      EXPECT_EQ(op(path), 0) << path;
      EXPECT_FALSE(has_capability(path)) << path;
    }
  }
  EXPECT_EQ(compare_trees(ref(), src(), {.mtime = false}), "");
  ASSERT_EQ(wait_converged(), "");
}

// A capability set before backupfs mounted is the file's as much as one set through it: getcap
// (getxattr) through the mount sees it, and exec would. backupfs once answered ENODATA for every
// security.capability until one was set through the mount. A write by the owner then drops it,
// and a chown by root drops another, as on a plain directory; the mirror follows.
TEST_F(KillPrivTest, ACapabilitySetBeforeTheMountIsSeenAndDropped) {
  for (const std::string& root : {src(), ref()}) {
    for (const char* name : {"written", "chowned"}) {
      const std::string path = root + "/" + name;
      make_file(path, kNobody, kNobody, 0755);
      ASSERT_EQ(::setxattr(path.c_str(), kCapability, kCapabilityBlob.data(),
                           sizeof(kCapabilityBlob), 0), 0) << std::strerror(errno);
    }
  }
  ASSERT_TRUE(start_all());
  let_nobody_in();
  std::array<uint32_t, 5> seen{};
  ASSERT_EQ(::getxattr(src("written").c_str(), kCapability, seen.data(), sizeof seen),
            static_cast<ssize_t>(sizeof seen)) << std::strerror(errno);
  EXPECT_EQ(seen, kCapabilityBlob);
  EXPECT_TRUE(has_capability(src("chowned")));
  ASSERT_EQ(wait_converged(), "") << "the mirror has both capabilities";

  for (const std::string& root : {src(), ref()}) {
    EXPECT_EQ(as_nobody([&] { return append_byte(root + "/written"); }), 0);
    EXPECT_FALSE(has_capability(root + "/written")) << root;
    EXPECT_EQ(as_root([&] {
                return ::chown((root + "/chowned").c_str(), kNobody, 0) == 0 ? 0 : errno;
              }), 0);
    EXPECT_FALSE(has_capability(root + "/chowned")) << root;
  }
  EXPECT_EQ(compare_trees(ref(), src(), {.mtime = false}), "");
  ASSERT_EQ(wait_converged(), "");
}

// tracefs, where the kernel's tracepoints are switched on and read: the usual mount if there is
// one, else an instance of it mounted for the test (all instances share the kernel's one tracing
// state) and unmounted again.
class Tracefs {
 public:
  explicit Tracefs(const std::string& scratch) {
    if (::access("/sys/kernel/tracing/events/fuse", F_OK) == 0) {
      dir_ = "/sys/kernel/tracing";
    } else if (::mount("nodev", scratch.c_str(), "tracefs", 0, nullptr) == 0) {
      dir_ = scratch;
      mounted_ = true;
    }
  }
  ~Tracefs() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  Tracefs(const Tracefs&) = delete;
  Tracefs& operator=(const Tracefs&) = delete;

  bool usable() const { return !dir_.empty() && ::access(event().c_str(), W_OK) == 0; }
  // Empties the buffer and records fuse_request_send from now on.
  bool start() { return set("tracing_on", "0") && set("trace", "") && set(event_rel(), "1") &&
                        set("tracing_on", "1"); }
  void stop() {
    set("tracing_on", "0");
    set(event_rel(), "0");
  }
  // The requests sent to the connection serving dev since start(): opcode name -> count.
  std::map<std::string, int> requests(dev_t dev) const {
    std::ifstream trace(dir_ + "/trace");
    const std::string connection = "connection " + std::to_string(minor(dev)) + " ";
    std::map<std::string, int> counts;
    for (std::string line; std::getline(trace, line);) {
      size_t open = line.find("(FUSE_");
      if (line.find(connection) == std::string::npos || open == std::string::npos) continue;
      counts[line.substr(open + 1, line.find(')', open) - open - 1)]++;
    }
    return counts;
  }

 private:
  static std::string event_rel() { return "events/fuse/fuse_request_send/enable"; }
  std::string event() const { return dir_ + "/" + event_rel(); }
  bool set(const std::string& rel, const std::string& text) {
    std::ofstream out(dir_ + "/" + rel);
    out << text;
    out.flush();
    return static_cast<bool>(out);
  }

  std::string dir_;
  bool mounted_ = false;
};

TEST_F(KillPrivTest, FsyncedWritesCostNoGetxattr) {
  Tracefs tracefs(scratch_dir("tracefs"));
  if (!tracefs.usable()) GTEST_SKIP() << "no tracefs with the fuse events: cannot count requests";
  ASSERT_TRUE(start_all());
  const std::string path = src("fsynced.bin");
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  std::string block(4096, 'k');
  // The first write after the attributes were fetched asks once; then the inode is S_NOSEC.
  ASSERT_EQ(::pwrite(fd, block.data(), block.size(), 0), 4096);
  struct stat st {};
  ASSERT_EQ(::stat(src().c_str(), &st), 0);

  ASSERT_TRUE(tracefs.start());
  for (int i = 0; i < 100; ++i) {
    ASSERT_EQ(::pwrite(fd, block.data(), block.size(), i * 4096), 4096);
    ASSERT_EQ(::fsync(fd), 0);
  }
  tracefs.stop();
  ::close(fd);

  auto counts = tracefs.requests(st.st_dev);
  std::ostringstream seen;
  for (const auto& [op, n] : counts) seen << op << "=" << n << " ";
  EXPECT_EQ(counts["FUSE_WRITE"], 100) << seen.str();
  EXPECT_EQ(counts["FUSE_GETXATTR"], 0) << seen.str();
  ASSERT_EQ(wait_converged(), "");
}

}  // namespace
}  // namespace bkp::it
