// tune_allocator (see process.h).
#include "common/process.h"

#include <malloc.h>

namespace bkp {

void tune_allocator() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
}

}  // namespace bkp
