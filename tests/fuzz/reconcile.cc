// Fuzz target: a reconcile from whatever state a receiver's tree is in. A receiver (backupd's
// mirror, a replica) can hold anything after crashes, cut connections and a sender that changed
// its mind: names where the source has none, directories where it has files, files under ids
// the source uses for others, wrong sizes, holes, modes, owners, xattrs. The input is played
// straight into the receiver's Applier as such a history (program.h, with the source's own file
// ids mixed in), then a new sender stream reconciles a fixed source tree into it over a
// socketpair: manifest, scan, block digests, batches (testutil/stream_ends.h).
// Properties: the receiver refuses no frame of the reconcile, the sender finishes, and the
// receiver's tree then equals the source in everything the tree comparer checks (names, types,
// modes, owners, mtimes, xattrs, hard links, content, holes).
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/changes/applier.h"
#include "common/stream/sender.h"
#include "tests/fuzz/fuzz.h"
#include "tests/fuzz/program.h"
#include "tests/testutil/stream_ends.h"
#include "tests/testutil/tree_compare.h"

namespace {

namespace fs = std::filesystem;
constexpr int kTimeoutMs = 10000;

struct Scratch {
  fs::path root, src;
  std::vector<uint64_t> ids;  // the source's regular files, by inode (their FileIds)
};

void put(const fs::path& p, const std::string& data) { std::ofstream(p) << data; }

// Every kind of entry under names the programs use too: a 300 KiB file with an xattr and a
// second name, a symlink, a fifo, a sparse file, directories.
const Scratch& scratch() {
  static const Scratch s = [] {
    const fs::path& root = bkp::fuzz::scratch_root("reconcile");
    Scratch made{root, root / "src", {}};
    fs::create_directories(made.src / "dir");
    fs::create_directories(made.src / "tree");
    std::string big(300 * 1024, '\0');
    for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 2654435761u) >> 13);
    put(made.src / "a", big);
    FUZZ_CHECK(setxattr((made.src / "a").c_str(), "user.a", "v", 1, 0) == 0, "setxattr");
    fs::create_hard_link(made.src / "a", made.src / "b");
    fs::create_symlink("a", made.src / "c");
    put(made.src / "dir" / "victim", "small");
    FUZZ_CHECK(mkfifo((made.src / "victim").c_str(), 0640) == 0, "mkfifo");
    {
      std::ofstream sparse(made.src / "dir" / "c");
    }
    fs::resize_file(made.src / "dir" / "c", 1 << 20);
    {
      std::fstream f(made.src / "dir" / "c", std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(512 * 1024);
      f << "island";
    }
    for (const char* f : {"a", "dir/victim", "dir/c"}) {
      struct stat st{};
      FUZZ_CHECK(lstat((made.src / f).c_str(), &st) == 0, "lstat");
      made.ids.push_back(st.st_ino);
    }
    return made;
  }();
  return s;
}

// An operation on the source's own names and ids, as an earlier stream of this source (or a
// confused one) could have left them: the receiver's tree then resembles the source in part,
// which is where a reconcile keeps, narrows and moves rather than sends.
bkp::wire::Op likely_op(bkp::fuzz::Input& in, const std::vector<uint64_t>& ids) {
  static const char* const kNames[] = {"a", "b", "c", "victim", "dir", "dir/victim", "dir/c",
                                       "tree", "tree/a"};
  using bkp::wire::OpKind;
  constexpr OpKind kKinds[] = {OpKind::kCreate, OpKind::kMkdir,    OpKind::kTruncate,
                               OpKind::kLink,   OpKind::kSymlink,  OpKind::kSetXattr,
                               OpKind::kRename, OpKind::kAttr,     OpKind::kUnlink};
  bkp::wire::Op op;
  op.kind = kKinds[in.byte() % std::size(kKinds)];
  op.path = kNames[in.byte() % std::size(kNames)];
  op.target = kNames[in.byte() % std::size(kNames)];
  op.id = ids[in.byte() % ids.size()];
  uint8_t mode = in.byte();
  op.mode = op.kind == OpKind::kMkdir ? 0755 : (mode % 2 ? 0644 : 0600);
  constexpr uint64_t kSizes[] = {0, 4096, 128 * 1024, 300 * 1024, 1 << 20};
  op.size = kSizes[in.byte() % std::size(kSizes)];
  op.mtime_ns = op.atime_ns = static_cast<int64_t>(in.byte()) * 1000000000;
  op.name = "user.a";
  op.value = in.byte() % 2 ? "v" : "w";
  return op;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Scratch& s = scratch();
  const fs::path dst = s.root / "dst";
  fs::remove_all(dst);
  fs::create_directories(dst);
  auto sink = bkp::testutil::Sink::open(dst.string(), "tree", "ids");
  FUZZ_CHECK(sink.has_value(), "the receiver does not open");
  bkp::changes::Applier& applier = (*sink)->applier();
  // The receiver's history.
  bkp::fuzz::Input in(data, size);
  const std::string outside = (s.root / "outside").string();
  auto source_id = [&](uint64_t id) { return id > 0 && id < 6 ? s.ids[id % s.ids.size()] : id; };
  for (int steps = 0; !in.done() && steps < 48; ++steps) {
    switch (in.byte() % 4) {
      case 0: {
        auto w = bkp::fuzz::write(in);
        w.id = source_id(w.id);
        if (in.byte() % 2) w.offset %= 400 * 1024;  // mostly over the source's own bytes
        (void)applier.write(w);
        break;
      }
      case 1:
        (void)applier.apply(likely_op(in, s.ids));
        break;
      default: {
        auto op = bkp::fuzz::op(in, outside);
        op.id = source_id(op.id);
        (void)applier.apply(op);
      }
    }
  }
  FUZZ_CHECK(applier.commit().has_value(), "the receiver's history does not commit");

  // A new stream reconciles the source into it, over one connection.
  bkp::changes::ChangeLog log;
  bkp::stream::Sender sender(log);
  bkp::testutil::DirSource files(s.src.string());
  bkp::changes::ShipCounters counters;
  auto delivered = bkp::testutil::deliver(**sink, {.sender = sender,
                                                   .log = log,
                                                   .data = files,
                                                   .counters = counters,
                                                   .instance = bkp::stream::new_instance(),
                                                   .on_baseline = bkp::testutil::OnBaseline::kScan,
                                                   .src_root = s.src.string(),
                                                   .connections = 1,
                                                   .timeout_ms = kTimeoutMs});
  if (!delivered) std::fprintf(stderr, "%s\n", delivered.error().message.c_str());
  FUZZ_CHECK(delivered.has_value(), "a reconcile was refused or did not finish");
  std::string diff = bkp::testutil::compare_trees(s.src.string(), (dst / "tree").string());
  if (!diff.empty()) std::fprintf(stderr, "differs: %s\n", diff.c_str());
  FUZZ_CHECK(diff.empty(), "after a reconcile the receiver's tree differs from the source");
  return 0;
}
