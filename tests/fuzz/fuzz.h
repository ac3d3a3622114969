// The contract every fuzz target here follows, so one file serves two drivers: libFuzzer (the
// bkp_fuzz_* binaries of a clang build with BKP_BUILD_FUZZERS, run for minutes or hours by hand)
// and replay_main.cc (CTest: every saved input, then a bounded, seeded mutation run, in the
// normal build). A target reports a broken property with FUZZ_CHECK, which aborts: both drivers
// then print the input that did it. Input reads an input as the values a target's program needs.
#pragma once

#include <stdlib.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <span>
#include <string>

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

namespace bkp::fuzz {

// Reads the input front to back; past its end every value is 0.
class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool done() const { return pos_ >= size_; }
  uint8_t byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint64_t bits(int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v |= uint64_t{byte()} << (8 * i);
    return v;
  }
  // Up to max bytes as they come (fewer at the end).
  std::span<const uint8_t> take(size_t max) {
    size_t n = std::min(max, size_ - std::min(pos_, size_));
    std::span<const uint8_t> s(data_ + pos_, n);
    pos_ += n;
    return s;
  }
  // A string of a length the next byte picks, at most max.
  std::string raw(size_t max) {
    auto s = take(byte() % (max + 1));
    return std::string(s.begin(), s.end());
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// This run's own directory under $TMPDIR (bkp-fuzz-TARGET-XXXXXX), made at the first call and
// removed when the process exits normally (an abort leaves it, with what broke the property).
// Removed by the destructor of the static that holds it: an atexit handler registered while it
// was being made would run after that destructor, on a path already gone.
inline const std::filesystem::path& scratch_root(const char* target) {
  struct Scratch {
    std::filesystem::path path;
    ~Scratch() {
      std::error_code ignored;
      std::filesystem::remove_all(path, ignored);
    }
  };
  static const Scratch scratch = [target] {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / (std::string("bkp-fuzz-") + target + "-XXXXXX"))
            .string();
    FUZZ_CHECK(mkdtemp(tmpl.data()) != nullptr, "mkdtemp");
    return Scratch{tmpl};
  }();
  return scratch.path;
}

}  // namespace bkp::fuzz
