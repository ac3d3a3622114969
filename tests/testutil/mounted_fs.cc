// MountedFs: mount detection through /proc/self/mountinfo, and an unmount that always ends
// with nothing mounted and no process left, in the order that loses the least data: a clean
// unmount first (backupfs then ships what is left and exits 0), signals only after that.
#include "tests/testutil/mounted_fs.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "tests/testutil/wait.h"

namespace bkp::testutil {
namespace {

using namespace std::chrono_literals;

// mountinfo escapes ' ', '\t', '\n' and '\\' as \ooo.
std::string unescape_octal(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    auto octal = [&](size_t j) { return j < s.size() && s[j] >= '0' && s[j] <= '7'; };
    if (s[i] == '\\' && octal(i + 1) && octal(i + 2) && octal(i + 3)) {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

bool is_fuse_type(const std::string& t) { return t == "fuse" || t.rfind("fuse.", 0) == 0; }

}  // namespace

std::vector<MountEntry> read_mountinfo() {
  std::vector<MountEntry> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::vector<std::string> f;
    std::string w;
    while (fields >> w) f.push_back(w);
    // id parent maj:min root mount_point options [optional...] - fstype source super_options
    size_t dash = 0;
    for (size_t i = 6; i < f.size(); ++i) {
      if (f[i] == "-") {
        dash = i;
        break;
      }
    }
    if (f.size() < 5 || dash == 0 || dash + 1 >= f.size()) continue;
    out.push_back({unescape_octal(f[4]), f[dash + 1]});
  }
  return out;
}

std::vector<std::string> mounts_under(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& m : read_mountinfo()) {
    if (m.mount_point == dir ||
        (m.mount_point.size() > dir.size() && m.mount_point.compare(0, dir.size(), dir) == 0 &&
         m.mount_point[dir.size()] == '/')) {
      out.push_back(m.mount_point);
    }
  }
  return out;
}

bool is_fuse_mounted(const std::string& dir) {
  for (const auto& m : read_mountinfo()) {
    if (m.mount_point == dir && is_fuse_type(m.fstype)) return true;
  }
  return false;
}

std::optional<std::string> fuse_unavailable_reason() {
  if (access("/dev/fuse", R_OK | W_OK) != 0) return "/dev/fuse is missing or not accessible";
  if (geteuid() != 0) return "not root (backupfs mounts with allow_other and chowns files)";
  return std::nullopt;
}

Result<std::unique_ptr<MountedFs>> MountedFs::mount(const MountOptions& opts) {
  if (is_fuse_mounted(opts.dir)) return fail(EBUSY, opts.dir + " is already a FUSE mount");
  std::vector<std::string> argv{opts.binary, opts.dir};
  argv.insert(argv.end(), opts.args.begin(), opts.args.end());
  argv.push_back("-f");
  auto daemon = std::make_unique<Daemon>("backupfs", argv, opts.log_path, opts.env);
  std::unique_ptr<MountedFs> fs(new MountedFs(opts.dir, std::move(daemon)));
  wait_until([&] { return fs->mounted() || !fs->daemon_->alive(); }, opts.timeout, 20ms);
  if (fs->mounted()) return fs;
  std::string why =
      fs->daemon_->alive()
          ? "no FUSE mount after " + std::to_string(opts.timeout.count()) + " ms"
          : "backupfs exited (" + describe_status(*fs->daemon_->status()) + ") before mounting";
  std::string log = fs->daemon_->log_tail();
  fs.reset();  // unmounts if it appeared meanwhile, stops the process
  return fail(EIO, "mount " + opts.dir + ": " + why + "\n--- backupfs log ---\n" + log);
}

Result<int> MountedFs::unmount(std::chrono::milliseconds exit_timeout) {
  if (exit_status_) return *exit_status_;
  std::string problems;
  // A busy mount (a test still holding a file) can take a moment to release; 25 tries.
  for (int attempt = 0; attempt < 25 && mounted(); ++attempt) {
    auto r = run_command({"/usr/bin/fusermount3", "-u", dir_}, 10s);
    if (wait_until([&] { return !mounted(); }, 200ms, 20ms)) break;
    if (attempt == 0 || attempt == 24) problems += "fusermount3 -u: " + r.output;
  }
  if (!daemon_->wait_exit(exit_timeout)) {
    problems += "backupfs did not exit within " + std::to_string(exit_timeout.count()) +
                " ms of the unmount; stopping it\n";
  }
  int status = daemon_->stop(5s);
  if (mounted()) {
    problems += "still mounted; detaching lazily\n";
    run_command({"/usr/bin/fusermount3", "-u", "-z", dir_}, 10s);
  }
  exit_status_ = status;
  if (!problems.empty()) return fail(EBUSY, "unmount " + dir_ + ": " + problems);
  return status;
}

MountedFs::~MountedFs() {
  auto r = unmount();
  if (!r) fprintf(stderr, "[testutil] %s\n", r.error().message.c_str());
}

}  // namespace bkp::testutil
