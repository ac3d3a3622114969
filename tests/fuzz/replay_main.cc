// The CTest driver of a fuzz target (fuzz.h): runs every input saved under the corpus
// directories given, then `--mutations N` inputs made from them by a seeded mutator (byte flips,
// inserts, erases, splices and copies of interesting integers), so each suite run explores a
// little beyond the saved inputs and any run can be repeated (`--seed S`). Before each input it
// writes the input to `--last FILE` (if given), so an abort leaves the culprit behind to be saved
// in the corpus.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz.h"

namespace {

using Input = std::vector<uint8_t>;

Input read_all(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return Input(std::istreambuf_iterator<char>(in), {});
}

void run(const Input& in, const std::string& last) {
  if (!last.empty()) {
    std::ofstream out(last, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(in.data()), static_cast<std::streamsize>(in.size()));
  }
  LLVMFuzzerTestOneInput(in.data(), in.size());
}

// One random edit of in (which may be empty), like libFuzzer's simplest mutators.
void mutate(Input& in, const std::vector<Input>& pool, std::mt19937_64& rng) {
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  constexpr uint64_t kInteresting[] = {0, 1, 0x7f, 0x80, 0xff, 0x7fff, 0xffff, 0x7fffffff,
                                       0xffffffff, 0x100000000ull, 0x7fffffffffffffffull,
                                       ~0ull};
  switch (in.empty() ? 1 : pick(6)) {
    case 0:
      in[pick(in.size())] ^= static_cast<uint8_t>(1u << pick(8));
      break;
    case 1: {
      size_t n = 1 + pick(16);
      Input bytes(n);
      for (auto& b : bytes) b = static_cast<uint8_t>(rng());
      in.insert(in.begin() + static_cast<long>(in.empty() ? 0 : pick(in.size() + 1)),
                bytes.begin(), bytes.end());
      break;
    }
    case 2: {
      size_t at = pick(in.size());
      size_t n = std::min(in.size() - at, 1 + pick(16));
      in.erase(in.begin() + static_cast<long>(at), in.begin() + static_cast<long>(at + n));
      break;
    }
    case 3: {
      const Input& other = pool[pick(pool.size())];
      if (other.empty()) break;
      size_t from = pick(other.size());
      size_t n = std::min(other.size() - from, 1 + pick(64));
      size_t at = pick(in.size() + 1);
      in.insert(in.begin() + static_cast<long>(at), other.begin() + static_cast<long>(from),
                other.begin() + static_cast<long>(from + n));
      break;
    }
    case 4: {
      uint64_t v = kInteresting[pick(std::size(kInteresting))];
      size_t width = size_t{1} << pick(4);  // 1, 2, 4 or 8 bytes, little-endian
      size_t at = pick(in.size());
      for (size_t i = 0; i < width && at + i < in.size(); ++i) in[at + i] = uint8_t(v >> (8 * i));
      break;
    }
    default:
      in[pick(in.size())] = static_cast<uint8_t>(rng());
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<Input> corpus;
  uint64_t mutations = 0, seed = 1;
  std::string last;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--mutations" && i + 1 < argc) {
      mutations = std::stoull(argv[++i]);
    } else if (a == "--seed" && i + 1 < argc) {
      seed = std::stoull(argv[++i]);
    } else if (a == "--last" && i + 1 < argc) {
      last = argv[++i];
    } else if (std::filesystem::is_directory(a)) {
      for (const auto& e : std::filesystem::directory_iterator(a))
        if (e.is_regular_file()) corpus.push_back(read_all(e.path()));
    } else {
      std::fprintf(stderr, "usage: %s [--mutations N] [--seed S] [--last FILE] CORPUS_DIR...\n",
                   argv[0]);
      return 2;
    }
  }
  if (corpus.empty()) {
    std::fprintf(stderr, "no corpus inputs found: the saved inputs are the test\n");
    return 1;
  }
  for (const Input& in : corpus) run(in, last);
  std::mt19937_64 rng(seed);
  for (uint64_t i = 0; i < mutations; ++i) {
    Input in = corpus[rng() % corpus.size()];
    for (uint64_t edits = 1 + rng() % 4; edits > 0; --edits) mutate(in, corpus, rng);
    run(in, last);
  }
  std::printf("%zu saved inputs and %llu mutations ran without breaking a property\n",
              corpus.size(), static_cast<unsigned long long>(mutations));
  return 0;
}
