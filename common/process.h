// Process-wide settings every daemon (backupfs, backupd, replicator) applies at start.
#pragma once

#include <cstdint>
#include <initializer_list>

#include "common/result.h"
#include "common/unique_fd.h"

namespace bkp {

// Blocks sigs in the calling thread (call it before any thread starts, so all of them inherit
// the mask) and returns a non-blocking signalfd that receives them instead; SIGPIPE is ignored.
// A child that execs must unblock them first (unblock_signals).
Result<UniqueFd> signals_to_fd(std::initializer_list<int> sigs);
void unblock_signals(std::initializer_list<int> sigs);
// The number of the next signal pending on such an fd, or 0 if there is none.
int read_signal(int fd);

// Keeps the allocator from returning freed memory to the kernel after every large frame.
//
// Streams allocate and free a buffer of up to 4 MiB per frame. With glibc's defaults the main
// arena trims its top and large blocks are mmap'd, so each frame's buffer is fresh memory that
// page-faults in as it is copied into: profiled, that was most of the replicator's CPU. Fixed
// thresholds (blocks under 32 MiB come from the heap, trimming only past 64 MiB free) keep
// those pages mapped and reused; the cost is that RSS stays at its peak working set, a few
// MiB per stream.
void tune_allocator();

// Which boot of the machine this is: a hash of /proc/sys/kernel/random/boot_id, never 0 (0 when
// it cannot be read). A record that names another boot was written before a restart of the
// machine, which may have lost whatever had not been flushed (stream::Receiver). Test seam:
// BKP_TEST_BOOT_ID, if set, is hashed instead, so a test can play a machine restart.
uint64_t boot_id();

}  // namespace bkp
