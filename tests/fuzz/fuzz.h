// The contract every fuzz target here follows, so one file serves two drivers: libFuzzer (the
// bkp_fuzz_* binaries of a clang build with BKP_BUILD_FUZZERS, run for minutes or hours by hand)
// and replay_main.cc (CTest: every saved input, then a bounded, seeded mutation run, in the
// normal build). A target reports a broken property with FUZZ_CHECK, which aborts: both drivers
// then print the input that did it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

// What libFuzzer calls with each input; returns 0.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

#define FUZZ_CHECK(cond, what)                                                     \
  do {                                                                             \
    if (!(cond)) {                                                                 \
      std::fprintf(stderr, "fuzz property broken at %s:%d: %s\n", __FILE__, __LINE__, \
                   what);                                                          \
      std::abort();                                                                \
    }                                                                              \
  } while (0)
