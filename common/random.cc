// See random.h.
#include "common/random.h"

#include <sys/random.h>
#include <unistd.h>

#include <chrono>

namespace bkp {

uint64_t random_nonzero() {
  uint64_t v = 0;
  while (v == 0) {
    if (::getrandom(&v, sizeof v, 0) != static_cast<ssize_t>(sizeof v)) {
      v = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
          (static_cast<uint64_t>(::getpid()) << 32);
    }
  }
  return v;
}

}  // namespace bkp
