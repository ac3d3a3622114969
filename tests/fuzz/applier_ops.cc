// Fuzz target: the Applier (common/changes/applier.h) playing a stream of operations and writes
// that a hostile or broken sender chose: backupd's mirror and every replica tree are written this
// way. The input is read as a program of operations (kinds, paths made of components such as
// "..", "." and names of what lies outside, symlinks pointing out of the tree, ids, modes,
// flags, xattrs) and writes, with commits in between. Offsets and sizes are kept small so a run
// never fills the disk; everything else is as the peer sent it.
// Properties: nothing crashes, and nothing outside the tree and its ids directory is created,
// removed or changed: not the files beside the tree in the same base directory, not a victim
// tree outside the base that symlinks in the stream point at.
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "common/changes/applier.h"
#include "common/wire/messages.h"
#include "tests/fuzz/program.h"
#include "tests/fuzz/fuzz.h"

namespace {

namespace fs = std::filesystem;
using bkp::changes::Applier;

struct Scratch {
  fs::path root;     // this run's own (fuzz.h)
  fs::path base;     // root/base: the Applier's base; the tree is base/vol/tree
  fs::path outside;  // root/outside: what no stream may touch
};

const Scratch& scratch() {
  static const Scratch s = [] {
    const fs::path& root = bkp::fuzz::scratch_root("applier");
    Scratch made{root, root / "base", root / "outside"};
    fs::create_directories(made.base / "vol");
    fs::create_directories(made.outside / "dir");
    std::ofstream(made.outside / "victim") << "not yours";
    std::ofstream(made.base / "beside") << "not yours either";
    fs::create_symlink(made.outside, made.base / "vol" / "link-out");
    return made;
  }();
  return s;
}

// Every entry under root, except the tree's own directory, with what a write would change.
std::map<std::string, std::string> outside_state() {
  std::map<std::string, std::string> state;
  const fs::path vol = scratch().base / "vol";
  for (auto it = fs::recursive_directory_iterator(scratch().root);
       it != fs::recursive_directory_iterator(); ++it) {
    if (it->path().parent_path() == vol && it->path().filename() != "link-out") {
      it.disable_recursion_pending();  // the tree and its ids: the stream's to change
      continue;
    }
    struct stat st {};
    FUZZ_CHECK(lstat(it->path().c_str(), &st) == 0, "lstat outside the tree");
    std::string v = std::to_string(st.st_mode) + " " + std::to_string(st.st_uid) + ":" +
                    std::to_string(st.st_gid);
    if (!S_ISDIR(st.st_mode)) {  // a directory's entries are listed themselves
      v += " " + std::to_string(st.st_size) + " " + std::to_string(st.st_mtim.tv_sec) + "." +
           std::to_string(st.st_mtim.tv_nsec);
    }
    if (S_ISREG(st.st_mode)) {
      std::ifstream in(it->path());
      v += " " + std::string(std::istreambuf_iterator<char>(in), {});
    }
    state[it->path().string()] = v;
  }
  return state;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::map<std::string, std::string> before = outside_state();
  const fs::path vol = scratch().base / "vol";
  for (const auto& e : fs::directory_iterator(vol))
    if (e.path().filename() != "link-out") fs::remove_all(e.path());
  {
    auto applier = Applier::open(scratch().base.string(), "vol/tree", "vol/ids");
    FUZZ_CHECK(applier.has_value(), "the Applier does not open on an empty base");
    bkp::fuzz::Input in(data, size);
    for (int steps = 0; !in.done() && steps < 64; ++steps) {
      switch (in.byte() % 8) {
        case 0: (void)(*applier)->write(bkp::fuzz::write(in)); break;
        case 1: (void)(*applier)->commit(); break;
        default: (void)(*applier)->apply(bkp::fuzz::op(in, scratch().outside.string()));
      }
    }
  }
  auto after = outside_state();
  for (const auto& [path, v] : after) {
    if (!before.contains(path) || before.at(path) != v) {
      std::fprintf(stderr, "now: %s %s\n", path.c_str(), v.c_str());
    }
  }
  for (const auto& [path, v] : before) {
    if (!after.contains(path)) std::fprintf(stderr, "gone: %s\n", path.c_str());
  }
  FUZZ_CHECK(after == before, "a stream changed something outside its tree");
  return 0;
}
