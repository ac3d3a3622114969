// XXH3 at the widest vector unit the CPU has, for the hashes over bulk data (frame checksums,
// content and block digests).
//
// A build for the x86-64 baseline compiles xxhash's vector code for SSE2, which hashes about
// 10 GB/s on this project's test machine; libxxhash's `*_dispatch` entry points choose AVX2 or
// AVX-512 at run time instead (about 28 GB/s there). The frame checksum covers every byte of
// every stream on both of its ends, so during a baseline the SSE2 hash was 5-6% of both the
// node's and backupd's CPU (bench/RESULTS.md, "Checksums at the CPU's width"). The hashes are
// the same bytes whichever code computes them: nothing on the wire or on disk changes.
#pragma once

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t's size, for states on the stack
#include <xxhash.h>

#if defined(__x86_64__) || defined(__i386__)
// Redefines XXH3_64bits, XXH3_64bits_withSeed and XXH3_64bits_update as their _dispatch forms.
#include <xxh_x86dispatch.h>
#endif
