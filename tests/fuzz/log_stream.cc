// Fuzz target: the node-to-receiver stream as a whole. An application's history (what backupfs
// would record: mkdir, create, writes with holes, truncate, punch, allocate, renames with their
// flags, links, symlinks, fifos, unlinks, rmdirs, chmod and times, xattrs) is played into a
// source tree whose change log records it (testutil::LoggedTree), and at points the input
// picks, the log is delivered to a receiver through a Sender with the input's batch limits, over
// a connection cut after the input's number of frames, the receiver restarted or not after a
// cut (testutil/stream_ends.h). The names and ids are the application's: ids are fresh at each
// create, and every operation by id names a file that has it, so the history is one a node can
// record.
// Properties: every delivery completes within four connections with no baseline asked after the
// first contact and no frame refused, and after the last one the receiver's tree equals the
// source in everything the tree comparer checks (names, types, modes, owners, mtimes, xattrs,
// hard links, content, holes).
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>

#include "common/changes/applier.h"
#include "common/stream/sender.h"
#include "tests/fuzz/fuzz.h"
#include "tests/testutil/stream_ends.h"
#include "tests/testutil/tree_compare.h"

namespace {

namespace fs = std::filesystem;
using bkp::wire::Op;
using bkp::wire::OpKind;
constexpr int kTimeoutMs = 10000;
constexpr uint64_t kInstance = 7;

const fs::path& scratch() { return bkp::fuzz::scratch_root("log-stream"); }

// Delivers the whole log; the first connection is cut after `cut_after` frames.
void deliver(bkp::testutil::LoggedTree& src, bkp::testutil::Sink& sink,
             bkp::stream::Sender& sender, uint64_t cut_after, bool restart, bool first_contact) {
  bkp::changes::ApplierSource data(src.applier());
  bkp::changes::ShipCounters counters;
  auto delivered = bkp::testutil::deliver(
      sink, {.sender = sender,
             .log = src.log(),
             .data = data,
             .counters = counters,
             .instance = kInstance,
             .on_baseline = first_contact ? bkp::testutil::OnBaseline::kSendLog
                                          : bkp::testutil::OnBaseline::kRefuse,
             .cut_after = cut_after,
             .restart_after_cut = restart,
             .timeout_ms = kTimeoutMs});
  if (!delivered) std::fprintf(stderr, "%s\n", delivered.error().message.c_str());
  FUZZ_CHECK(delivered.has_value(), "a delivery failed (refused, unasked baseline, undelivered)");
}

const char* const kNames[] = {"a", "b", "c", "d", "d/a", "d/b", "d/e", "d/e/a", "e"};

std::string name(bkp::fuzz::Input& in) { return kNames[in.byte() % std::size(kNames)]; }

// The id the application's file at rel has (0: none, or not a regular file).
uint64_t id_at(bkp::testutil::LoggedTree& src, const std::string& rel) {
  struct stat st{};
  if (fstatat(src.applier().tree_fd(), rel.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return 0;
  if (!S_ISREG(st.st_mode)) return 0;
  return src.applier().id_of_inode(st.st_ino).value_or(0);
}

// One application operation, recorded as backupfs would if it succeeded.
void step(bkp::fuzz::Input& in, bkp::testutil::LoggedTree& src, uint64_t& next_id) {
  Op o;
  o.path = name(in);
  uint64_t id = id_at(src, o.path);
  switch (in.byte() % 14) {
    case 0:
      o.kind = OpKind::kMkdir;
      o.mode = 0755;
      break;
    case 1:
    case 2:
      o.kind = OpKind::kCreate;
      o.id = next_id++;
      o.mode = in.byte() % 2 ? 0644 : 0600;
      break;
    case 3: {  // a write, often past the end (a hole before it)
      if (id == 0) return;
      uint64_t offset = in.byte() % 2 ? in.byte() * 4096 : in.bits(3) % (2u << 20);
      auto bytes = in.take(1 + in.byte() * 64);
      (void)src.write(id, offset, std::string(bytes.begin(), bytes.end()));
      return;
    }
    case 4:
      o.kind = OpKind::kTruncate;
      o.id = id;
      o.size = in.byte() % 2 ? in.byte() * 4096 : in.bits(3) % (2u << 20);
      if (id == 0) return;
      break;
    case 5:
      o.kind = in.byte() % 2 ? OpKind::kPunch : OpKind::kAllocate;
      o.id = id;
      o.offset = in.byte() * 4096;
      o.size = 4096 * (1 + in.byte() % 64);
      o.flags = o.kind == OpKind::kAllocate ? in.byte() % 3 == 0 ? bkp::wire::kAllocateZeroRange
                                                                 : bkp::wire::kAllocateKeepSize
                                            : 0;
      if (id == 0) return;
      break;
    case 6: {
      o.kind = OpKind::kRename;
      o.target = name(in);
      uint8_t f = in.byte() % 4;
      o.flags = f == 0 ? RENAME_NOREPLACE : f == 1 ? RENAME_EXCHANGE : 0;
      break;
    }
    case 7:
      o.kind = OpKind::kLink;
      o.target = o.path;
      o.path = name(in);
      o.id = id;
      break;
    case 8:
      o.kind = in.byte() % 2 ? OpKind::kSymlink : OpKind::kMknod;
      o.target = "x";
      o.mode = S_IFIFO | 0640;
      break;
    case 9:
      o.kind = OpKind::kUnlink;
      break;
    case 10:
      o.kind = OpKind::kRmdir;
      break;
    case 11:
      o.kind = OpKind::kAttr;
      o.id = id;
      if (id != 0) o.path.clear();
      o.mode = 0600 | (in.byte() & 0177);
      o.atime_ns = o.mtime_ns = static_cast<int64_t>(in.byte()) * 1000000007;
      break;
    default:
      o.kind = in.byte() % 3 ? OpKind::kSetXattr : OpKind::kRemoveXattr;
      o.id = id;
      if (id != 0) o.path.clear();
      o.name = in.byte() % 2 ? "user.a" : "user.b";
      o.value = std::string(in.byte() % 32, 'v');
  }
  (void)src.apply(o);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  for (const auto& e : fs::directory_iterator(scratch())) fs::remove_all(e.path());
  fs::create_directories(scratch() / "src");
  fs::create_directories(scratch() / "dst");
  auto src = bkp::testutil::LoggedTree::open((scratch() / "src").string());
  FUZZ_CHECK(src.has_value(), "the source does not open");
  {
    // Both roots are new; the log, standing for a baseline, starts with the source root's times.
    struct stat st{};
    FUZZ_CHECK(fstat((*src)->applier().tree_fd(), &st) == 0, "fstat");
    FUZZ_CHECK((*src)->apply(bkp::wire::attr_from_stat("", 0, st)).has_value(), "root attributes");
  }
  bkp::fuzz::Input in(data, size);
  bkp::changes::Limits limits{1 + in.byte() % 32u, 1 + in.bits(3)};
  bkp::stream::Sender sender((*src)->log(), limits);
  auto sink = bkp::testutil::Sink::open((scratch() / "dst").string(), "tree", "ids");
  FUZZ_CHECK(sink.has_value(), "the receiver does not open");
  uint64_t next_id = 1;
  bool contacted = false;
  for (int steps = 0; !in.done() && steps < 64; ++steps) {
    if (in.byte() % 8 == 0) {
      // A delivery: the first contact is never cut (its log stands for the baseline).
      uint64_t cut = contacted ? in.byte() : UINT64_MAX;
      deliver(**src, **sink, sender, cut, in.byte() % 2 == 0, !contacted);
      contacted = true;
    } else {
      step(in, **src, next_id);
    }
  }
  deliver(**src, **sink, sender, UINT64_MAX, false, !contacted);
  std::string diff = bkp::testutil::compare_trees((scratch() / "src" / "src").string(),
                                                  (scratch() / "dst" / "tree").string());
  if (!diff.empty()) std::fprintf(stderr, "differs: %s\n", diff.c_str());
  FUZZ_CHECK(diff.empty(), "after its log was delivered, the receiver's tree differs");
  return 0;
}
