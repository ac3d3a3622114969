// tune_allocator, the signal descriptor of the daemons and the boot id (see process.h).
#include "common/process.h"

#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <malloc.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "common/xxh3.h"

namespace bkp {

void tune_allocator() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
}

uint64_t boot_id() {
  std::string id;
  if (const char* seam = std::getenv("BKP_TEST_BOOT_ID"); seam != nullptr && *seam != '\0') {
    id = seam;
  } else {
    std::ifstream in("/proc/sys/kernel/random/boot_id");
    if (!std::getline(in, id) || id.empty()) return 0;
  }
  uint64_t h = XXH3_64bits(id.data(), id.size());
  return h != 0 ? h : 1;
}

namespace {

sigset_t set_of(std::initializer_list<int> sigs) {
  sigset_t mask;
  sigemptyset(&mask);
  for (int sig : sigs) sigaddset(&mask, sig);
  return mask;
}

}  // namespace

Result<UniqueFd> signals_to_fd(std::initializer_list<int> sigs) {
  sigset_t mask = set_of(sigs);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  UniqueFd fd(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!fd) return fail_errno("signalfd");
  return fd;
}

void unblock_signals(std::initializer_list<int> sigs) {
  sigset_t mask = set_of(sigs);
  pthread_sigmask(SIG_UNBLOCK, &mask, nullptr);
}

int read_signal(int fd) {
  signalfd_siginfo info{};
  return ::read(fd, &info, sizeof(info)) == sizeof(info) ? static_cast<int>(info.ssi_signo) : 0;
}

}  // namespace bkp
