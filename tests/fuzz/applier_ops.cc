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
#include "tests/fuzz/fuzz.h"

namespace {

namespace fs = std::filesystem;
using bkp::changes::Applier;
using bkp::wire::Op;
using bkp::wire::OpKind;

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
  std::string raw(size_t max) {
    size_t n = std::min<size_t>(byte() % (max + 1), size_ - std::min(pos_, size_));
    std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return s;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

struct Scratch {
  fs::path root;     // mkdtemp'd
  fs::path base;     // root/base: the Applier's base; the tree is base/vol/tree
  fs::path outside;  // root/outside: what no stream may touch
};

const Scratch& scratch() {
  static const Scratch s = [] {
    std::string tmpl = (fs::temp_directory_path() / "bkp-fuzz-applier-XXXXXX").string();
    FUZZ_CHECK(mkdtemp(tmpl.data()) != nullptr, "mkdtemp");
    Scratch made{tmpl, fs::path(tmpl) / "base", fs::path(tmpl) / "outside"};
    fs::create_directories(made.base / "vol");
    fs::create_directories(made.outside / "dir");
    std::ofstream(made.outside / "victim") << "not yours";
    std::ofstream(made.base / "beside") << "not yours either";
    fs::create_symlink(made.outside, made.base / "vol" / "link-out");
    std::atexit([] { fs::remove_all(scratch().root); });
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

std::string component(Input& in) {
  static const std::string outside = scratch().outside.string();
  switch (in.byte() % 14) {
    case 0: return "a";
    case 1: return "b";
    case 2: return "..";
    case 3: return ".";
    case 4: return "";
    case 5: return "link-out";
    case 6: return "victim";
    case 7: return "ids";
    case 8: return "tree";
    case 9: return outside;
    case 10: return std::string(300, 'n');
    case 11: return "dir";
    case 12: return in.raw(12);
    default: return "c";
  }
}

std::string path(Input& in) {
  std::string p;
  for (int n = 1 + in.byte() % 4; n > 0; --n) {
    if (!p.empty() || in.byte() % 8 == 0) p += '/';
    p += component(in);
  }
  return p;
}

std::string xattr_name(Input& in) {
  switch (in.byte() % 6) {
    case 0: return "user.a";
    case 1: return "security.capability";
    case 2: return "trusted.t";
    case 3: return "system.posix_acl_access";
    case 4: return "user." + std::string(300, 'x');
    default: return in.raw(24);
  }
}

Op op(Input& in) {
  Op o;
  o.kind = static_cast<OpKind>(1 + in.byte() % static_cast<uint8_t>(bkp::wire::kLastOpKind));
  o.path = path(in);
  o.target = path(in);
  o.id = in.byte() % 4 == 0 ? in.bits(8) : in.byte() % 6;
  o.mode = static_cast<uint32_t>(in.bits(4));
  o.uid = static_cast<uint32_t>(in.byte() % 3 == 0 ? in.bits(4) : in.byte() % 3);
  o.gid = static_cast<uint32_t>(in.byte() % 3 == 0 ? in.bits(4) : in.byte() % 3);
  o.rdev = in.bits(2);
  o.flags = static_cast<uint32_t>(in.bits(1) | (in.bits(1) << 4));
  o.size = in.bits(3) % (4u << 20);
  o.offset = in.bits(3) % (4u << 20);
  o.atime_ns = static_cast<int64_t>(in.bits(8));
  o.mtime_ns = static_cast<int64_t>(in.bits(8));
  o.name = xattr_name(in);
  o.value = in.raw(40);
  return o;
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
    Input in(data, size);
    for (int steps = 0; !in.done() && steps < 64; ++steps) {
      switch (in.byte() % 8) {
        case 0: {
          bkp::wire::Write w;
          w.id = in.byte() % 6;
          w.offset = in.bits(3) % (4u << 20);
          std::string bytes = in.raw(200);
          w.inflated.assign(bytes.begin(), bytes.end());
          w.data = w.inflated;
          (void)(*applier)->write(w);
          break;
        }
        case 1: (void)(*applier)->commit(); break;
        default: (void)(*applier)->apply(op(in));
      }
    }
  }
  auto after = outside_state();
  if (after != before) {
    for (const auto& [path, v] : after)
      if (!before.contains(path) || before.at(path) != v) std::fprintf(stderr, "now: %s %s\n", path.c_str(), v.c_str());
    for (const auto& [path, v] : before)
      if (!after.contains(path)) std::fprintf(stderr, "gone: %s\n", path.c_str());
  }
  FUZZ_CHECK(after == before, "a stream changed something outside its tree");
  return 0;
}
