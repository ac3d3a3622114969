// backupfs restarts without an unmount (issue 11). `backupfs DIR ... -f` is a small keeper that
// mounts, holds /dev/fuse and runs the real server as a worker child; when the worker dies
// (SIGKILL) or is upgraded (SIGHUP to the keeper: the worker drains, the keeper execs the binary
// again), a new worker takes over the same FUSE connection and the kernel resends what was never
// answered. What the application must see is a pause, never an error:
//
//   - 20 kills and 20 upgrades while one thread appends fsync'd records (with a rename, a create,
//     an unlink, a mkdir and an rmdir every few records) and another reads, stats and lists
//     them: not one failed call, the log byte for byte, and the mirror and replicas converge;
//   - a file descriptor, a shared writable mapping and a directory stream opened before the
//     restarts keep working after each of them, and so do descriptors of files that lost their
//     last name while open (unlinked, renamed over), which the keeper holds until closed;
//   - a namespace operation (or an XATTR_CREATE setxattr, a removexattr, a RENAME_NOREPLACE, a
//     RENAME_EXCHANGE, which done twice would swap back) carried out by a worker that dies before
//     replying
//     (BACKUPFS_FAILPOINT=die-after:NAME) is resent to the next worker, which must answer as if
//     nothing had happened: 0, not EEXIST or ENOENT.
//
// The fixture (takeover.h) finds the worker, and knows it serves by the keeper's log. Every
// wait is a condition with a deadline (kRestartTimeout for each restart).
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "common/unique_fd.h"
#include "tests/integration/takeover.h"
#include "tests/integration/workload.h"
#include "tests/testutil/files.h"
#include "tests/testutil/wait.h"

namespace bkp::it {
namespace {

using testutil::wait_until;

constexpr int kRestarts = 20;             // of each kind
constexpr uint64_t kProgressRecords = 3;  // the writer's progress that ends each restart
constexpr size_t kFileSize = 64 * 1024;

// The file's bytes as backupfs has them, not as the page cache does: its clean cached pages are
// dropped first (POSIX_FADV_DONTNEED), so the read goes to the worker.
std::optional<std::string> read_uncached(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd || ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED) != 0) return std::nullopt;
  return testutil::read_file(path);
}

TEST_F(TakeoverTest, TwentyKillsAndTwentyUpgradesUnderReadAndFsyncWrite) {
  ASSERT_TRUE(start_all());
  mkdirs(src("w"));
  put(src("w/cur"), "cur 0");
  pid_t worker = 0;
  ASSERT_TRUE(wait_new_worker(0, 0, &worker));

  LogWorkload app(src());
  // One restart, then a wait until the writer fsync'd a few more records.
  auto restart_under_load = [&](Restart how, int k) -> ::testing::AssertionResult {
    uint64_t at = app.records();
    app.errors().set_phase("after " + std::string(name_of(how)) + " " + std::to_string(k));
    if (auto r = restart(how, &worker); !r) return r << "\n(" << name_of(how) << " " << k << ")";
    auto moved_on = [&] { return app.records() >= at + kProgressRecords; };
    wait_until([&] { return moved_on() || !app.both_running() || expired(); }, kRestartTimeout,
               5ms);
    if (moved_on()) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure()
           << "the writer did not get on after " << name_of(how) << " number " << k << " ("
           << app.records() - at << " records since; the worker now is " << worker
           << ")\nfailed calls so far:\n" << app.errors().report();
  };
  for (Restart how : {Restart::kKillWorker, Restart::kUpgrade}) {
    for (int k = 1; k <= kRestarts && !HasFailure(); ++k) EXPECT_TRUE(restart_under_load(how, k));
  }
  if (!app.stop(kRestartTimeout)) {
    ADD_FAILURE() << "the application is still blocked on the mount; killing backupfs";
    mount()->process().signal(SIGKILL);
  }
  app.join();
  EXPECT_EQ(app.errors().total(), 0u) << "failed calls:\n" << app.errors().report();
  ASSERT_FALSE(HasFailure());

  uint64_t n = app.records();
  fprintf(stderr, "[takeover] %d kills and %d upgrades of the worker under %llu records\n",
          kRestarts, kRestarts, static_cast<unsigned long long>(n));
  auto log = read_uncached(src("w/log"));
  ASSERT_TRUE(log) << "read w/log: " << std::strerror(errno);
  constexpr size_t kRecord = LogWorkload::kRecord;
  ASSERT_EQ(log->size(), n * kRecord) << "w/log after " << n << " records";
  for (uint64_t i = 0; i < n; ++i) {
    ASSERT_EQ(log->compare(i * kRecord, kRecord, LogWorkload::record(i)), 0)
        << "record " << i << " of " << n << " differs";
  }
  ASSERT_EQ(wait_converged(), "");
}

// The descriptors of the processes that lead to deleted files, the takeover memfds aside
// ("PID: target; " each).
std::string deleted_files_held(std::initializer_list<pid_t> pids) {
  std::string held;
  for (pid_t pid : pids) {
    std::error_code ec;
    for (const auto& fd : std::filesystem::directory_iterator(
             "/proc/" + std::to_string(pid) + "/fd", ec)) {
      std::string target = std::filesystem::read_symlink(fd.path(), ec).string();
      if (!ec && !target.starts_with("/memfd:") && target.ends_with(" (deleted)")) held += std::to_string(pid) + ": " + target + "; ";
    }
  }
  return held;
}

TEST_F(TakeoverTest, OpenFilesSurviveRestarts) {
  ASSERT_TRUE(start_all());
  mkdirs(src("o/d/c"));
  put(src("o/d/a"), "a");
  put(src("o/d/b"), "b");
  std::string rw_model = random_string(kFileSize, 1), map_model = random_string(kFileSize, 2);
  put(src("o/rw"), rw_model);
  put(src("o/mapped"), map_model);
  pid_t worker = 0;
  ASSERT_TRUE(wait_new_worker(0, 0, &worker));

  UniqueFd rw(::open(src("o/rw").c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(rw) << "open o/rw: " << std::strerror(errno);
  UniqueFd mapped(::open(src("o/mapped").c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(mapped) << "open o/mapped: " << std::strerror(errno);
  void* addr = ::mmap(nullptr, kFileSize, PROT_READ | PROT_WRITE, MAP_SHARED, mapped.get(), 0);
  ASSERT_NE(addr, MAP_FAILED) << "mmap o/mapped: " << std::strerror(errno);
  std::unique_ptr<char, std::function<void(char*)>> map(
      static_cast<char*>(addr), [](char* p) { ::munmap(p, kFileSize); });
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(src("o/d").c_str()), ::closedir);
  ASSERT_TRUE(dir) << "opendir o/d: " << std::strerror(errno);
  // Files with no name left: only their descriptors (and the keeper) keep them.
  std::string gone_model = random_string(kFileSize, 3), over_model = random_string(kFileSize, 4);
  put(src("o/gone"), gone_model);
  put(src("o/over"), over_model);
  put(src("o/new"), "new");
  UniqueFd gone(::open(src("o/gone").c_str(), O_RDWR | O_CLOEXEC));
  UniqueFd over(::open(src("o/over").c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(gone && over) << "open o/gone, o/over: " << std::strerror(errno);
  ASSERT_EQ(::unlink(src("o/gone").c_str()), 0) << std::strerror(errno);
  ASSERT_EQ(::rename(src("o/new").c_str(), src("o/over").c_str()), 0) << std::strerror(errno);

  // Round 0 before any restart (so every handle has been used), then one after each kind.
  auto use_everything = [&](int round, const char* after) {
    SCOPED_TRACE(after);
    struct stat st {};
    ASSERT_EQ(::fstat(rw.get(), &st), 0) << std::strerror(errno);
    EXPECT_EQ(static_cast<size_t>(st.st_size), kFileSize);
    std::string got(kFileSize, '\0');
    ASSERT_EQ(::pread(rw.get(), got.data(), kFileSize, 0), static_cast<ssize_t>(kFileSize))
        << std::strerror(errno);
    EXPECT_TRUE(got == rw_model) << "o/rw read through the held fd differs";
    std::string data = random_string(4096, 100 + round);
    off_t at = static_cast<off_t>(round) * 8192 + 100;  // not page aligned
    ASSERT_EQ(::pwrite(rw.get(), data.data(), data.size(), at), 4096) << std::strerror(errno);
    rw_model.replace(at, data.size(), data);
    ASSERT_EQ(::pread(rw.get(), got.data(), kFileSize, 0), static_cast<ssize_t>(kFileSize));
    EXPECT_TRUE(got == rw_model) << "o/rw after a pwrite through the held fd";
    EXPECT_TRUE(testutil::read_file(src("o/rw")) == rw_model) << "o/rw through a fresh open";

    EXPECT_TRUE(std::string_view(map.get(), kFileSize) == map_model) << "the mapping differs";
    data = random_string(4096, 200 + round);
    std::memcpy(map.get() + round * 12288, data.data(), data.size());
    map_model.replace(round * 12288, data.size(), data);
    ASSERT_EQ(::msync(map.get(), kFileSize, MS_SYNC), 0) << "msync: " << std::strerror(errno);
    EXPECT_TRUE(testutil::read_file(src("o/mapped")) == map_model)
        << "o/mapped through a fresh open after msync";

    auto names = list_from_start(dir.get());
    ASSERT_TRUE(names) << "readdir o/d: " << std::strerror(errno);
    EXPECT_EQ(*names, (std::vector<std::string>{"a", "b", "c"}));

    for (auto [fd, model, what] : {std::tuple{gone.get(), &gone_model, "the unlinked o/gone"},
                                   std::tuple{over.get(), &over_model, "the renamed-over o/over"}}) {
      SCOPED_TRACE(what);
      ASSERT_EQ(::fstat(fd, &st), 0) << std::strerror(errno);
      EXPECT_EQ(st.st_nlink, 0u);
      data = random_string(4096, 300 + round);
      ASSERT_EQ(::pwrite(fd, data.data(), data.size(), round * 4096), 4096) << std::strerror(errno);
      model->replace(round * 4096, data.size(), data);
      ASSERT_EQ(::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);  // read from backupfs
      ASSERT_EQ(::pread(fd, got.data(), kFileSize, 0), static_cast<ssize_t>(kFileSize))
          << std::strerror(errno);
      EXPECT_TRUE(got == *model) << "read through the held fd differs";
    }
  };

  use_everything(0, "before any restart");
  ASSERT_FALSE(HasFailure());
  ASSERT_TRUE(restart(Restart::kKillWorker, &worker));
  use_everything(1, "after kill -9 of the worker");
  ASSERT_TRUE(restart(Restart::kUpgrade, &worker));
  use_everything(2, "after an upgrade (SIGHUP)");

  EXPECT_EQ(::munmap(map.release(), kFileSize), 0) << std::strerror(errno);
  EXPECT_EQ(::close(mapped.release()), 0) << "close o/mapped: " << std::strerror(errno);
  EXPECT_EQ(::close(rw.release()), 0) << "close o/rw: " << std::strerror(errno);
  EXPECT_EQ(::closedir(dir.release()), 0) << "closedir o/d: " << std::strerror(errno);
  EXPECT_EQ(::close(gone.release()), 0) << "close o/gone: " << std::strerror(errno);
  EXPECT_EQ(::close(over.release()), 0) << "close o/over: " << std::strerror(errno);
  // What the worker holds, not what the page cache kept.
  EXPECT_TRUE(read_uncached(src("o/rw")) == rw_model) << "o/rw as backupfs has it";
  EXPECT_TRUE(read_uncached(src("o/mapped")) == map_model) << "o/mapped as backupfs has it";
  EXPECT_TRUE(testutil::read_file(src("o/over")) == "new");
  // Closed: the worker and the keeper let both go (the kernel sends RELEASE after close returns).
  EXPECT_TRUE(wait_until([&] { return deleted_files_held({keeper(), worker}).empty(); },
                         kRestartTimeout))
      << "still held: " << deleted_files_held({keeper(), worker});
  ASSERT_EQ(wait_converged(), "");
}

// One namespace operation whose worker dies before replying. op and check take a root (the
// mount, then ref): op returns 0 or an errno, check "" or what is wrong afterwards.
struct ResentCase {
  const char* name;  // the entry the failpoint names: the new one for rename and link
  std::function<int(const std::string&)> op;
  std::function<std::string(const std::string&)> check;
};

int rc_of(int rc) { return rc == 0 ? 0 : errno; }

std::string type_is(const std::string& path, mode_t type) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return "lstat " + path + ": " + std::strerror(errno);
  return (st.st_mode & S_IFMT) == type ? "" : path + " has the wrong type";
}

std::string is_gone(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) != 0 && errno == ENOENT ? "" : path + " is still there";
}

std::string holds(const std::string& path, const std::string& content) {
  return testutil::read_file(path) == content ? "" : path + " does not hold \"" + content + "\"";
}

// from is gone and to holds content: what a rename must leave.
std::string moved(const std::string& from, const std::string& to, const std::string& content) {
  std::string gone = is_gone(from);
  return gone.empty() ? holds(to, content) : gone;
}

// Every case, each on its own name. The fd open(O_CREAT | O_EXCL) returns is kept in
// (*created)[root] for the check to write through and close.
std::vector<ResentCase> resent_cases(std::map<std::string, UniqueFd>* created) {
  using Root = const std::string&;
  auto at = [](Root r, const char* name) { return r + "/" + name; };
  return {
      {"f-mkdir", [=](Root r) { return rc_of(::mkdir(at(r, "f-mkdir").c_str(), 0755)); },
       [=](Root r) { return type_is(at(r, "f-mkdir"), S_IFDIR); }},
      {"f-mknod",
       [=](Root r) { return rc_of(::mknod(at(r, "f-mknod").c_str(), S_IFIFO | 0640, 0)); },
       [=](Root r) { return type_is(at(r, "f-mknod"), S_IFIFO); }},
      {"f-create",
       [=](Root r) {
         int fd = ::open(at(r, "f-create").c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
         (*created)[r].reset(fd);
         return fd >= 0 ? 0 : errno;
       },
       [=](Root r) -> std::string {
         int fd = (*created)[r].release();
         struct stat st {};
         if (::write(fd, "created", 7) != 7) return "write: " + errno_text(errno);
         if (::fstat(fd, &st) != 0 || st.st_size != 7) return "fstat after the write";
         if (::close(fd) != 0) return "close: " + errno_text(errno);
         return holds(at(r, "f-create"), "created");
       }},
      {"f-symlink",
       [=](Root r) { return rc_of(::symlink("link-src", at(r, "f-symlink").c_str())); },
       [=](Root r) -> std::string {
         std::error_code ec;
         if (std::filesystem::read_symlink(at(r, "f-symlink"), ec) == "link-src") return "";
         return "f-symlink does not point at link-src";
       }},
      {"f-link",
       [=](Root r) { return rc_of(::link(at(r, "link-src").c_str(), at(r, "f-link").c_str())); },
       [=](Root r) -> std::string {
         struct stat a {}, b {};
         if (::lstat(at(r, "link-src").c_str(), &a) == 0 &&
             ::lstat(at(r, "f-link").c_str(), &b) == 0 && a.st_ino == b.st_ino &&
             b.st_nlink == 2) {
           return "";
         }
         return "f-link is not a second name of link-src";
       }},
      {"f-rename",
       [=](Root r) {
         return rc_of(::rename(at(r, "rename-from").c_str(), at(r, "f-rename").c_str()));
       },
       [=](Root r) { return moved(at(r, "rename-from"), at(r, "f-rename"), "renamed"); }},
      {"f-noreplace",
       [=](Root r) {
         return rc_of(::renameat2(AT_FDCWD, at(r, "noreplace-from").c_str(), AT_FDCWD,
                                  at(r, "f-noreplace").c_str(), RENAME_NOREPLACE));
       },
       [=](Root r) { return moved(at(r, "noreplace-from"), at(r, "f-noreplace"), "moved once"); }},
      {"f-exchange",
       [=](Root r) {
         return rc_of(::renameat2(AT_FDCWD, at(r, "exchange-with").c_str(), AT_FDCWD,
                                  at(r, "f-exchange").c_str(), RENAME_EXCHANGE));
       },
       [=](Root r) {
         std::string swapped = holds(at(r, "f-exchange"), "was exchange-with");
         return swapped.empty() ? holds(at(r, "exchange-with"), "was f-exchange") : swapped;
       }},
      {"user.f-create",
       [=](Root r) {
         return rc_of(::setxattr(at(r, "xattrs").c_str(), "user.f-create", "v1", 2, XATTR_CREATE));
       },
       [=](Root r) -> std::string {
         char buf[8] = {};
         ssize_t n = ::getxattr(at(r, "xattrs").c_str(), "user.f-create", buf, sizeof(buf));
         return n == 2 && std::string(buf, 2) == "v1" ? "" : "user.f-create is not v1";
       }},
      {"user.f-remove",
       [=](Root r) { return rc_of(::removexattr(at(r, "xattrs").c_str(), "user.f-remove")); },
       [=](Root r) -> std::string {
         return ::getxattr(at(r, "xattrs").c_str(), "user.f-remove", nullptr, 0) < 0 &&
                        errno == ENODATA
                    ? ""
                    : "user.f-remove is still there";
       }},
      {"f-unlink", [=](Root r) { return rc_of(::unlink(at(r, "f-unlink").c_str())); },
       [=](Root r) { return is_gone(at(r, "f-unlink")); }},
      {"f-rmdir", [=](Root r) { return rc_of(::rmdir(at(r, "f-rmdir").c_str())); },
       [=](Root r) { return is_gone(at(r, "f-rmdir")); }},
  };
}

TEST_F(TakeoverTest, ResentNamespaceOpsAnswerAsIfNothingHappened) {
  std::map<std::string, UniqueFd> created;
  auto cases = resent_cases(&created);
  std::string names;
  for (const auto& c : cases) names += (names.empty() ? "" : ",") + std::string(c.name);
  backupfs_env = {"BACKUPFS_FAILPOINT=die-after:" + names};
  // What unlink, rmdir, removexattr and the exchange act on is there before the mount: creating
  // it through the mount would fire the failpoint of its name already.
  for (const std::string& root : {src(), ref()}) {
    put(root + "/f-unlink", "to be unlinked");
    mkdirs(root + "/f-rmdir");
    put(root + "/xattrs", "");
    ASSERT_EQ(::setxattr((root + "/xattrs").c_str(), "user.f-remove", "x", 1, 0), 0);
    put(root + "/f-exchange", "was f-exchange");
  }
  ASSERT_TRUE(start_all());
  for (const std::string& root : {src(), ref()}) {
    put(root + "/link-src", "linked");
    put(root + "/rename-from", "renamed");
    put(root + "/noreplace-from", "moved once");
    put(root + "/exchange-with", "was exchange-with");
  }
  pid_t worker = 0;
  ASSERT_TRUE(wait_new_worker(0, 0, &worker));

  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    pid_t old = worker;
    size_t from = log_end();
    int err = -1;
    bool answered = finishes_within([&] { err = c.op(src()); }, kRestartTimeout,
                                    [&] { mount()->process().signal(SIGKILL); });
    ASSERT_TRUE(answered) << "no answer within " << kRestartTimeout.count() << " s";
    EXPECT_EQ(err, 0) << errno_text(err);
    EXPECT_TRUE(wait_new_worker(old, from, &worker)) << "the failpoint did not fire";
    if (err == 0) {
      EXPECT_EQ(c.check(src()), "");
    }
    int ref_err = c.op(ref());
    ASSERT_EQ(ref_err, 0) << "on the plain directory: " << errno_text(ref_err);
    EXPECT_EQ(c.check(ref()), "") << "on the plain directory";
  }
  EXPECT_EQ(compare_trees(ref(), src(), {.mtime = false}), "");
  ASSERT_EQ(wait_converged(), "");
}

// The first worker dies right after reading the kernel's INIT, before answering or keeping it
// (BACKUPFS_FAILPOINT=die-after:@init). The kernel sends nothing else until INIT is answered, so
// the next worker asks for it again (FUSE_NOTIFY_RESEND) and must serve the mount as a first
// worker would.
TEST_F(TakeoverTest, AWorkerLostWithTheInitIsReplaced) {
  backupfs_env = {"BACKUPFS_FAILPOINT=die-after:@init"};
  ASSERT_TRUE(start_all());
  pid_t worker = 0;
  ASSERT_TRUE(wait_new_worker(0, 0, &worker));
  EXPECT_NE(log_text("backupfs").find("killed by signal 9"), std::string::npos)
      << "the failpoint did not fire";
  mkdirs(src("app"));
  put(src("app/f"), "served by the second worker");
  EXPECT_EQ(slurp(src("app/f")), "served by the second worker");
  EXPECT_EQ(wait_converged(), "");
}

// The keeper must sleep while the worker serves: it once polled the /dev/fuse descriptor (for
// its end), which woke it at every request the kernel queued, a context switch per request on the
// application's cores. 2,000 GETXATTR requests may cost it a few wakeups, not one each.
uint64_t context_switches(pid_t pid) {
  std::string status = testutil::read_file(fmt::format("/proc/{}/status", pid)).value_or("");
  uint64_t total = 0;
  for (const char* key : {"voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"}) {
    size_t at = status.find(key);
    if (at != std::string::npos) total += std::stoull(status.substr(at + std::strlen(key)));
  }
  return total;
}

TEST_F(TakeoverTest, TheKeeperSleepsWhileTheWorkerServes) {
  ASSERT_TRUE(start_all());
  pid_t worker = 0;
  ASSERT_TRUE(wait_new_worker(0, 0, &worker));
  put(src("f"), "x");
  constexpr int kRequests = 2000;
  const uint64_t before = context_switches(keeper());
  ASSERT_GT(before, 0u) << "no context switch count for the keeper";
  for (int i = 0; i < kRequests; ++i) {
    char value[8];
    ASSERT_EQ(::getxattr(src("f").c_str(), "user.absent", value, sizeof value), -1);
    ASSERT_EQ(errno, ENODATA);
  }
  EXPECT_LT(context_switches(keeper()) - before, uint64_t{kRequests / 10});
}

// An upgrade is the binary at the keeper's path, run again: first a new version (the worker runs
// the new file), then a broken one (a script that exits at once), which must not cost the mount:
// after two failed starts the keeper runs its own version and the application goes on.
TEST_F(TakeoverTest, AnUpgradeRunsTheNewBinaryAndABrokenOneFallsBackToTheKeepers) {
  const std::string bin = scratch_dir("bin") + "/backupfs";
  std::filesystem::copy_file(binaries().backupfs, bin);
  backupfs_binary = bin;
  ASSERT_TRUE(start_all());
  pid_t worker = 0;
  ASSERT_TRUE(wait_new_worker(0, 0, &worker));
  auto inode_of = [](const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
  };
  auto replace = [&](const std::string& from_file) {
    std::filesystem::copy_file(from_file, bin + ".new");
    std::filesystem::permissions(bin + ".new", std::filesystem::perms::owner_all);
    ASSERT_EQ(::rename((bin + ".new").c_str(), bin.c_str()), 0);
  };

  replace(binaries().backupfs);  // the "new version": another file at the same path
  const ino_t upgraded = inode_of(bin);
  size_t from = log_end();
  ASSERT_EQ(::kill(keeper(), SIGHUP), 0);
  pid_t old = worker;
  ASSERT_TRUE(wait_new_worker(old, from, &worker));
  EXPECT_EQ(inode_of("/proc/" + std::to_string(worker) + "/exe"), upgraded)
      << "the new worker does not run the file now at " << bin;

  const std::string broken = scratch_dir("broken") + "/backupfs";
  put(broken, "#!/bin/sh\nexit 3\n");
  replace(broken);
  from = log_end();
  ASSERT_EQ(::kill(keeper(), SIGHUP), 0);
  old = worker;
  ASSERT_TRUE(wait_new_worker(old, from, &worker));
  EXPECT_NE(log_text("backupfs").find("starting the keeper's own version", from),
            std::string::npos);
  mkdirs(src("app"));
  put(src("app/after"), "served by the keeper's own version");
  EXPECT_EQ(slurp(src("app/after")), "served by the keeper's own version");
  EXPECT_EQ(wait_converged(), "");
}

// An upgrade while backupd is attached and has everything hands the stream over: the new worker
// continues it where backupd stands, without a baseline or reconcile (no metadata walk, no pause
// of namespace operations), and what is written after the upgrade still reaches every copy. A
// kill -9 cannot hand anything over: the next worker reconciles.
TEST_F(TakeoverTest, AnUpgradeHandsTheStreamOverAndAKillReconciles) {
  ASSERT_TRUE(start_all());
  mkdirs(src("app"));
  put(src("app/before"), "written before the upgrade");
  ASSERT_EQ(wait_converged(), "");
  pid_t worker = 0;
  ASSERT_TRUE(wait_new_worker(0, 0, &worker));

  size_t from = log_end();
  ASSERT_EQ(::kill(keeper(), SIGHUP), 0);
  pid_t old = worker;
  ASSERT_TRUE(wait_new_worker(old, from, &worker));
  put(src("app/after"), "written after the upgrade");
  ASSERT_EQ(wait_converged(), "");
  std::string upgrade = log_text("backupfs").substr(from);
  EXPECT_NE(upgrade.find("handing the stream over after batch"), std::string::npos) << upgrade;
  EXPECT_NE(upgrade.find("continuing the stream the previous worker handed over"),
            std::string::npos) << upgrade;
  EXPECT_EQ(upgrade.find("baseline requested"), std::string::npos) << upgrade;

  from = log_end();
  old = worker;
  ASSERT_EQ(::kill(worker, SIGKILL), 0);
  ASSERT_TRUE(wait_new_worker(old, from, &worker));
  put(src("app/after-kill"), "written after the kill");
  ASSERT_EQ(wait_converged(), "");
  std::string kill = log_text("backupfs").substr(from);
  EXPECT_EQ(kill.find("continuing the stream"), std::string::npos) << kill;
  EXPECT_NE(kill.find("baseline requested"), std::string::npos) << kill;
}

}  // namespace
}  // namespace bkp::it
