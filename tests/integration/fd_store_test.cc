// The keeper under systemd (fs/fd_store.h), with this test in systemd's place: a datagram socket
// given as $NOTIFY_SOCKET receives the keeper's FDSTORE= messages and their descriptors, the
// keeper is killed with SIGKILL (the crash Restart=on-failure answers; its worker dies with it), and a
// new keeper is started the way systemd starts a service that has a descriptor store: the stored
// descriptors from fd 3 on, LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID. It must take the same mount
// over: a file held open across the crash keeps working and every copy converges.
// Not covered here: telling `systemctl restart` from `stop` (a D-Bus question to systemd, which
// this machine does not run as PID 1); without an answer the keeper treats SIGTERM as a stop.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "tests/integration/cluster.h"
#include "tests/integration/workload.h"
#include "tests/testutil/wait.h"

namespace bkp::it {
namespace {

constexpr const char* kNames[] = {"fuse", "root", "listener", "nodes", "files", "session"};

class FdStoreTest : public ClusterTest {
 protected:
  void SetUp() override {
    ClusterTest::SetUp();
    notify_path_ = scratch_dir("systemd") + "/notify";
    notify_ = notify_socket(notify_path_);
    ASSERT_TRUE(notify_);
    backupfs_env = {"NOTIFY_SOCKET=" + notify_path_};
  }

  void TearDown() override {
    if (keeper_ > 0) {
      // The mount is the new keeper's: unmounting ends it (exit 0), as for any backupfs.
      auto gone = unmount_source_status();
      EXPECT_TRUE(gone) << (gone ? "" : gone.error().message);
      int status = 0;
      bool exited = testutil::wait_until(
          [&] { return ::waitpid(keeper_, &status, WNOHANG) == keeper_; }, 20s, 50ms);
      if (!exited) {
        ::kill(-keeper_, SIGKILL);
        ::waitpid(keeper_, &status, 0);
      }
      EXPECT_TRUE(exited && WIFEXITED(status) && WEXITSTATUS(status) == 0)
          << "the new keeper after the unmount: " << testutil::describe_status(status);
    }
    for (auto& [name, fd] : stored_) ::close(fd);
    ClusterTest::TearDown();
  }

  // Reads what the keeper sent to the notify socket until every named descriptor is stored.
  ::testing::AssertionResult collect_store() {
    auto deadline = std::chrono::steady_clock::now() + 20s;
    while (stored_.size() < std::size(kNames) && std::chrono::steady_clock::now() < deadline) {
      pollfd p{notify_.get(), POLLIN, 0};
      if (::poll(&p, 1, 200) <= 0) continue;
      char text[4096];
      char control[CMSG_SPACE(sizeof(int) * 8)];
      iovec iov{text, sizeof(text) - 1};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
      ssize_t n = ::recvmsg(notify_.get(), &msg, MSG_CMSG_CLOEXEC);
      if (n < 0) continue;
      text[n] = '\0';
      std::vector<int> fds;
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; ++i) {
          int fd;
          std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
          fds.push_back(fd);
        }
      }
      std::string state(text);
      std::string name;
      if (auto at = state.find("FDNAME="); at != std::string::npos) {
        name = state.substr(at + 7, state.find('\n', at) - at - 7);
      }
      if (state.find("FDSTORE=1") != std::string::npos && fds.size() == 1 && !name.empty()) {
        stored_[name] = fds[0];
      } else {
        for (int fd : fds) ::close(fd);
      }
    }
    if (stored_.size() == std::size(kNames)) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "the keeper stored " << stored_.size()
                                         << " descriptors, not " << std::size(kNames) << "\n"
                                         << log_text("backupfs");
  }

  // Starts a keeper as systemd would after a restart: same command line, the stored descriptors
  // as LISTEN_FDS. Its output goes to backupfs's log.
  void start_from_store(const std::vector<std::string>& argv) {
    std::vector<char*> cargv;
    for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);
    std::string names;
    for (const char* n : kNames) names += std::string(names.empty() ? "" : ":") + n;
    std::string log = log_path("backupfs");
    keeper_ = ::fork();
    if (keeper_ != 0) return;
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    int out = ::open(log.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0644);
    ::dup2(out, 1);
    ::dup2(out, 2);
    // Out of the way of 3..8 first, then into place, without CLOEXEC.
    int high[std::size(kNames)];
    for (size_t i = 0; i < std::size(kNames); ++i) {
      high[i] = ::fcntl(stored_[kNames[i]], F_DUPFD, 100);
    }
    for (size_t i = 0; i < std::size(kNames); ++i) ::dup2(high[i], 3 + static_cast<int>(i));
    ::setenv("LISTEN_FDS", std::to_string(std::size(kNames)).c_str(), 1);
    ::setenv("LISTEN_FDNAMES", names.c_str(), 1);
    ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
    ::setenv("NOTIFY_SOCKET", notify_path_.c_str(), 1);
    ::execv(cargv[0], cargv.data());
    ::_exit(127);
  }

  std::string notify_path_;
  UniqueFd notify_;
  std::map<std::string, int> stored_;
  pid_t keeper_ = -1;
};

std::vector<std::string> cmdline_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::vector<std::string> args;
  for (std::string arg; std::getline(in, arg, '\0');) args.push_back(arg);
  return args;
}

TEST_F(FdStoreTest, AKeeperKilledComesBackFromTheStoreOnTheSameMount) {
  ASSERT_TRUE(start_all());
  ASSERT_TRUE(collect_store());
  mkdirs(src("app"));
  put(src("app/before"), "written before the crash");
  UniqueFd held(::open(src("app/held").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(held);
  ASSERT_EQ(::pwrite(held.get(), "first", 5, 0), 5);

  const pid_t old_keeper = mount()->process().pid();
  const std::vector<std::string> argv = cmdline_of(old_keeper);
  ASSERT_FALSE(argv.empty());
  size_t from = log_text("backupfs").size();
  ::kill(old_keeper, SIGKILL);
  ASSERT_TRUE(mount()->process().wait_exit(10s)) << "the keeper survived SIGKILL";
  ASSERT_TRUE(mount()->mounted()) << "the mount went with the keeper although systemd holds it";

  start_from_store(argv);
  ASSERT_GT(keeper_, 0);
  backupfs_alive = [this] { return ::waitpid(keeper_, nullptr, WNOHANG) == 0; };
  bool serving = testutil::wait_until(
      [&] {
        std::string log = log_text("backupfs").substr(from);
        return log.find("took the mount of") != std::string::npos &&
               log.find(" serving\n") != std::string::npos;
      },
      30s, 20ms);
  ASSERT_TRUE(serving) << log_text("backupfs").substr(from);

  // The file held open across the crash, and new work through the same mount.
  ASSERT_EQ(::pwrite(held.get(), "second", 6, 5), 6);
  struct stat st {};
  ASSERT_EQ(::fstat(held.get(), &st), 0);
  EXPECT_EQ(st.st_size, 11);
  char buf[16] = {};
  ASSERT_EQ(::pread(held.get(), buf, 11, 0), 11);
  EXPECT_STREQ(buf, "firstsecond");
  put(src("app/after"), "written after the crash");
  EXPECT_EQ(slurp(src("app/before")), "written before the crash");
  ASSERT_EQ(::close(held.release()), 0);
  EXPECT_EQ(wait_converged(), "");
}

}  // namespace
}  // namespace bkp::it
