// Random numbers from the kernel, for values that must differ between processes and runs
// (stream instances, run tokens), not for keys: when getrandom(2) fails, a mix of the clock and
// the pid stands in.
#pragma once

#include <cstdint>

namespace bkp {

// A random number, never 0.
uint64_t random_nonzero();

}  // namespace bkp
