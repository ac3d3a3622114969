// Process-wide settings every daemon (backupfs, backupd, replicator) applies at start.
#pragma once

namespace bkp {

// Keeps the allocator from returning freed memory to the kernel after every large frame.
//
// Streams allocate and free a buffer of up to 4 MiB per frame. With glibc's defaults the main
// arena trims its top and large blocks are mmap'd, so each frame's buffer is fresh memory that
// page-faults in as it is copied into: profiled, that was most of the replicator's CPU. Fixed
// thresholds (blocks under 32 MiB come from the heap, trimming only past 64 MiB free) keep
// those pages mapped and reused; the cost is that RSS stays at its peak working set, a few
// MiB per stream.
void tune_allocator();

}  // namespace bkp
