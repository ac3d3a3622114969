// bkp_hello_fs: the smallest FUSE filesystem (one read-only file, "hello"), so the harness's
// mount handling (MountedFs) is tested against a real FUSE mount independently of backupfs.
//
//   bkp_hello_fs DIR [-f] [--die-after-mount]
//
// --die-after-mount exits abruptly once mounted, leaving a dead mount behind ("Transport
// endpoint is not connected"), which MountedFs must still clean up.
#include <fuse.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

namespace {

constexpr char kContent[] = "hello from bkp_hello_fs\n";
bool g_die = false;

void* hello_init(fuse_conn_info*, fuse_config*) {
  if (g_die) {
    // Mounted by now (init runs after the mount); die without unmounting.
    signal(SIGALRM, SIG_DFL);
    alarm(1);
  }
  return nullptr;
}

int hello_getattr(const char* path, struct stat* st, fuse_file_info*) {
  memset(st, 0, sizeof *st);
  if (strcmp(path, "/") == 0) {
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
    return 0;
  }
  if (strcmp(path, "/hello") == 0) {
    st->st_mode = S_IFREG | 0444;
    st->st_nlink = 1;
    st->st_size = sizeof kContent - 1;
    return 0;
  }
  return -ENOENT;
}

int hello_readdir(const char* path, void* buf, fuse_fill_dir_t fill, off_t, fuse_file_info*,
                  fuse_readdir_flags) {
  if (strcmp(path, "/") != 0) return -ENOENT;
  fill(buf, ".", nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  fill(buf, "..", nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  fill(buf, "hello", nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  return 0;
}

int hello_open(const char* path, fuse_file_info* fi) {
  if (strcmp(path, "/hello") != 0) return -ENOENT;
  if ((fi->flags & O_ACCMODE) != O_RDONLY) return -EACCES;
  return 0;
}

int hello_read(const char* path, char* buf, size_t size, off_t offset, fuse_file_info*) {
  if (strcmp(path, "/hello") != 0) return -ENOENT;
  size_t len = sizeof kContent - 1;
  if (static_cast<size_t>(offset) >= len) return 0;
  size = std::min(size, len - static_cast<size_t>(offset));
  memcpy(buf, kContent + offset, size);
  return static_cast<int>(size);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::string(argv[i]) == "--die-after-mount") {
      g_die = true;
    } else {
      args.push_back(argv[i]);
    }
  }
  fuse_operations ops{};
  ops.init = hello_init;
  ops.getattr = hello_getattr;
  ops.readdir = hello_readdir;
  ops.open = hello_open;
  ops.read = hello_read;
  return fuse_main(static_cast<int>(args.size()), args.data(), &ops, nullptr);
}
