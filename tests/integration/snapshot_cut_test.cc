// Snapshots off the ingest path (issue 12, item 1), on real daemons. backupd runs with the test
// seam BACKUPD_TEST_ARCHIVE_DELAY_MS, so each archive takes seconds however small the volume,
// and every test waits for the journal line a run writes once it has its cut
// ("volume V: snapshot ID cut at change N ..."; ID is the cut's wall-clock time):
//
// - Writes through the mount keep reaching the mirror, each in well under a second, while the
//   run is still archiving (before issue 12 the run held the volume and they waited for its end),
//   and the run is then written.
// - The archive is the tree at the cut: the test copies the mirror once it has converged, waits
//   for a cut taken after that, then overwrites, truncates, punches, unlinks, renames over,
//   renames a directory, removes and makes directories, changes xattrs and modes, and adds and
//   removes hard links, and lets the mirror converge, all while the run archives. The snapshot
//   restores to exactly the copy.
// - A scratch area that fills up (a 1 MiB tmpfs over the volume's cut/) fails that run with the
//   reason, while the change that filled it reaches the mirror; the next run is written.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <regex>

#include "common/unique_fd.h"
#include "tests/integration/control.h"
#include "tests/integration/workload.h"
#include "tests/testutil/files.h"
#include "tests/testutil/wait.h"

namespace bkp::it {
namespace {

constexpr char kArchiveDelay[] = "BACKUPD_TEST_ARCHIVE_DELAY_MS=100";

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// "20261126T010203.123Z" -> milliseconds since the epoch.
std::optional<int64_t> snapshot_ms(const std::string& id) {
  tm t{};
  int ms = 0;
  if (std::sscanf(id.c_str(), "%4d%2d%2dT%2d%2d%2d.%3dZ", &t.tm_year, &t.tm_mon, &t.tm_mday,
                  &t.tm_hour, &t.tm_min, &t.tm_sec, &ms) != 7) {
    return std::nullopt;
  }
  t.tm_year -= 1900;
  t.tm_mon -= 1;
  return static_cast<int64_t>(timegm(&t)) * 1000 + ms;
}

class SnapshotCutTest : public ControlTest {
 protected:
  // A run's cut as backupd's journal tells it.
  struct CutLine {
    std::string id;        // the snapshot's
    int64_t at_ms = 0;     // when the cut was taken
    size_t log_end = 0;    // where the line ends in backupd's log
  };

  void SetUp() override {
    backupd_env = {kArchiveDelay};
    ControlTest::SetUp();
  }

  // The first cut taken after `after_ms`, waiting up to timeout.
  std::optional<CutLine> wait_cut_after(int64_t after_ms, std::chrono::seconds timeout) {
    static const std::regex kLine(R"(snapshot (\S+) cut at change \d+[^\n]*\n)");
    std::optional<CutLine> found;
    testutil::wait_until(
        [&] {
          std::string log = log_text("backupd");
          for (std::sregex_iterator it(log.begin(), log.end(), kLine), end; it != end; ++it) {
            auto ms = snapshot_ms((*it)[1]);
            if (ms && *ms > after_ms) {
              found = CutLine{(*it)[1], *ms, static_cast<size_t>(it->position() + it->length())};
              return true;
            }
          }
          return expired() || !backupd()->alive();
        },
        timeout, std::chrono::milliseconds(20));
    return found;
  }

  // A run archiving the tree as it is now, taken once the mirror converged and still archiving;
  // *copy (if given) gets a copy of the mirror at that cut. When a run finds nothing changed
  // (a cut just before the mirror was seen converged already had everything), a marker file
  // at the root gives the next run something to cut.
  std::optional<CutLine> cut_of_current_tree(std::string* copy) {
    for (int attempt = 0; attempt < 3; ++attempt) {
      if (attempt > 0) put(src("marker"), "attempt " + std::to_string(attempt) + "\n");
      if (std::string d = wait_converged(); !d.empty()) {
        ADD_FAILURE() << d;
        return std::nullopt;
      }
      int64_t converged = wall_ms();
      if (copy) *copy = copy_mirror("at-cut-" + std::to_string(attempt));
      auto cut = cut_or_unchanged(converged, 60s);
      if (cut && !ended(*cut)) return cut;
    }
    ADD_FAILURE() << "no run archived the tree as it is\n" << log_text("backupd");
    return std::nullopt;
  }

  // The first cut taken after after_ms; nullopt once a run that started later (in a later
  // second) is listed unchanged: no run cuts again until something changes.
  std::optional<CutLine> cut_or_unchanged(int64_t after_ms, std::chrono::seconds timeout) {
    std::optional<CutLine> cut;
    testutil::wait_until(
        [&] {
          cut = wait_cut_after(after_ms, 0s);
          if (cut || expired() || !backupd()->alive()) return true;
          for (const auto& run : runs().value_or(Json::array())) {
            auto started = parse_iso8601(run.value("started_at", ""));
            if (started && *started * 1000 >= after_ms + 1000 &&
                run.value("status", "") == "unchanged") {
              return true;
            }
          }
          return false;
        },
        timeout, std::chrono::milliseconds(100));
    return cut;
  }

  // Whether the run of that cut has ended (the scheduler's "run V: ..." line follows it: a
  // volume has one run at a time).
  bool ended(const CutLine& cut) {
    return log_text("backupd").find("info: run ", cut.log_end) != std::string::npos;
  }

  // How the run of that cut ended, as the scheduler's journal line says ("written ID.tgz ...",
  // "failed: why"), once it has.
  std::optional<std::string> wait_outcome(const CutLine& cut, std::chrono::seconds timeout) {
    constexpr std::string_view kRun = "info: run ";
    std::optional<std::string> outcome;
    testutil::wait_until(
        [&] {
          std::string log = log_text("backupd");
          size_t at = log.find(kRun, cut.log_end);
          size_t eol = at == std::string::npos ? at : log.find('\n', at);
          if (eol != std::string::npos) {
            std::string line = log.substr(at, eol - at);
            size_t colon = line.find(": ", kRun.size());  // after "run VOLUME"
            outcome = colon == std::string::npos ? line : line.substr(colon + 2);
          }
          return outcome || expired() || !backupd()->alive();
        },
        timeout, std::chrono::milliseconds(100));
    return outcome;
  }

  // A copy of the mirror as it is now (cp -a: modes, owners, times, xattrs, links, holes).
  std::string copy_mirror(const std::string& name) {
    std::string to = scratch_dir(name) + "/tree";
    auto r = testutil::run_command({"/bin/cp", "-a", mirror(), to}, 60s);
    EXPECT_EQ(r.exit_code(), 0) << r.output;
    return to;
  }

  // Files archived before the ones a test changes: a/000 ... (sorted before z/).
  void fillers(int n) {
    mkdirs(src("a"));
    for (int i = 0; i < n; ++i) {
      char name[16];
      std::snprintf(name, sizeof name, "a/%03d", i);
      put(src(name), random_string(4096, static_cast<uint64_t>(i)));
    }
  }
};

TEST_F(SnapshotCutTest, IngestGoesOnWhileASnapshotIsWritten) {
  ASSERT_TRUE(start_all("2s", /*with_replicators=*/false));
  fillers(150);  // about 15 s of archive at 100 ms an entry
  auto cut = cut_of_current_tree(nullptr);
  ASSERT_TRUE(cut);

  // Each write reaches the mirror while the run archives.
  mkdirs(src("live"));
  std::chrono::milliseconds slowest{0};
  constexpr int kRounds = 10;
  for (int i = 0; i < kRounds; ++i) {
    std::string name = "live/w" + std::to_string(i), data = random_string(64 * 1024, 1000 + i);
    auto t0 = std::chrono::steady_clock::now();
    put(src(name), data);
    ASSERT_TRUE(testutil::wait_until(
        [&] { return testutil::read_file(mirror() + "/" + name) == data || expired(); }, 20s,
        std::chrono::milliseconds(5)))
        << name << " never reached the mirror";
    slowest = std::max(slowest, std::chrono::duration_cast<std::chrono::milliseconds>(
                                    std::chrono::steady_clock::now() - t0));
    ASSERT_FALSE(ended(*cut)) << "the run ended before write " << i
                              << " reached the mirror: the archive must be slower for this test";
  }
  ASSERT_EQ(wait_converged(), "");
  EXPECT_FALSE(ended(*cut)) << "the mirror converged only after the run";
  std::cout << "slowest write to reach the mirror during the run: " << slowest.count() << " ms\n";
  EXPECT_LT(slowest, 5s);

  // Then the run ends, written, and the node never gave up waiting for an ack.
  auto outcome = wait_outcome(*cut, 60s);
  ASSERT_TRUE(outcome) << "the run of " << cut->id << " did not end";
  EXPECT_EQ(outcome->rfind("written " + cut->id + ".tgz", 0), 0u) << *outcome;
  EXPECT_EQ(log_text("backupfs").find("nothing in time"), std::string::npos)
      << log_text("backupfs");
}

TEST_F(SnapshotCutTest, TheArchiveIsTheTreeAtItsCut) {
  ASSERT_TRUE(start_all("2s", /*with_replicators=*/false));
  fillers(60);
  mkdirs(src("z/rmdir"));
  mkdirs(src("z/moved"));
  put(src("z/moved/inner"), "inside a directory renamed during the run");
  write_big_file(src("z/over"), 4 * kMiB, 1);
  write_big_file(src("z/trunc"), 2 * kMiB, 2);
  write_at(src("z/sparse"), 6 * kMiB, "island");
  put(src("z/gone"), "removed during the run");
  put(src("z/victim"), "renamed over during the run");
  put(src("z/new"), "renames over z/victim");
  put(src("z/two"), "two names, one goes");
  must(::link(src("z/two").c_str(), src("z/two-b").c_str()), "link");
  put(src("z/xattr"), "attributes change");
  set_xattr(src("z/xattr"), "user.note", "before");
  put(src("z/mode"), "chmod during the run", 0644);
  must(::symlink("over", src("z/link").c_str()), "symlink");

  std::string at_cut;
  auto cut = cut_of_current_tree(&at_cut);
  ASSERT_TRUE(cut);

  write_at(src("z/over"), kMiB, random_string(kMiB, 99));
  append(src("z/over"), "appended");
  {
    UniqueFd fd(::open(src("z/over").c_str(), O_WRONLY | O_CLOEXEC));
    must(fd ? 0 : -1, "open z/over");
    must(::fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 3 * kMiB, kMiB),
         "punch z/over");
  }
  truncate_to(src("z/trunc"), 100);
  write_at(src("z/sparse"), 0, "head");
  must(::unlink(src("z/gone").c_str()), "unlink");
  must(::rename(src("z/new").c_str(), src("z/victim").c_str()), "rename over");
  must(::unlink(src("z/two").c_str()), "unlink a name");
  must(::link(src("a/000").c_str(), src("z/three").c_str()), "link");
  must(::rmdir(src("z/rmdir").c_str()), "rmdir");
  mkdirs(src("z/born"));
  must(::rename(src("z/moved").c_str(), src("a/moved").c_str()), "rename a directory");
  put(src("a/moved/inner"), "rewritten");
  set_xattr(src("z/xattr"), "user.note", "after");
  set_xattr(src("z/xattr"), "user.more", "added");
  must(::chmod(src("z/mode").c_str(), 0600), "chmod");
  must(::unlink(src("z/link").c_str()), "unlink symlink");
  must(::symlink("elsewhere", src("z/link").c_str()), "symlink");
  ASSERT_EQ(wait_converged(), "");
  EXPECT_FALSE(ended(*cut)) << "the changes reached the mirror only after the run";

  auto outcome = wait_outcome(*cut, 60s);
  ASSERT_TRUE(outcome) << "the run of " << cut->id << " did not end";
  ASSERT_EQ(outcome->rfind("written " + cut->id + ".tgz", 0), 0u) << *outcome;
  std::string out = scratch_dir("restored");
  auto restore = bkptool({"restore", kHost, src(), "--to", out, "--snapshot", cut->id}, 60s);
  ASSERT_EQ(restore.exit_code(), 0) << restore.output;
  EXPECT_EQ(compare_trees(at_cut, out), "");
  EXPECT_NE(compare_trees(at_cut, src()), "") << "the changes changed nothing";
}

// The test mounts a 1 MiB tmpfs over the volume's scratch area, so the old bytes of an 8 MiB
// file rewritten during the run do not fit.
class SnapshotScratchTest : public SnapshotCutTest {
 protected:
  void TearDown() override {
    SnapshotCutTest::TearDown();  // stops backupd first: nothing holds the tmpfs any more
    if (mounted_.empty()) return;
    if (::umount(mounted_.c_str()) != 0) {
      ADD_FAILURE() << "umount " << mounted_ << ": " << std::strerror(errno);
      ::umount2(mounted_.c_str(), MNT_DETACH);
    }
  }
  std::string mounted_;
};

TEST_F(SnapshotScratchTest, AFullScratchAreaFailsTheRunNotTheIngest) {
  ASSERT_TRUE(start_all("2s", /*with_replicators=*/false));
  fillers(30);
  mkdirs(src("z"));
  write_big_file(src("z/big"), 8 * kMiB, 1);
  std::string scratch = volume_dir() + "/cut";
  ::mkdir(scratch.c_str(), 0755);
  if (::mount("tmpfs", scratch.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755") != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs at " << scratch << ": " << std::strerror(errno);
  }
  mounted_ = scratch;
  auto cut = cut_of_current_tree(nullptr);  // taken after the mount: in the tmpfs
  ASSERT_TRUE(cut);

  write_big_file(src("z/big"), 8 * kMiB, 2);
  ASSERT_EQ(wait_converged(), "") << "the full scratch area stopped the ingest";

  auto outcome = wait_outcome(*cut, 60s);
  ASSERT_TRUE(outcome) << "the run of " << cut->id << " did not end";
  EXPECT_EQ(outcome->rfind("failed: ", 0), 0u) << *outcome;
  std::string why;
  auto all = runs(&why);
  ASSERT_TRUE(all) << why;
  std::optional<Json> failed;
  for (const auto& run : *all) {
    if (run.value("status", "") == "failed") failed = run;
  }
  ASSERT_TRUE(failed) << "the history has no failed run: " << all->dump(2);
  std::string error = failed->value("error", "");
  EXPECT_NE(error.find("No space left on device"), std::string::npos) << failed->dump();
  EXPECT_NE(error.find("cannot keep the old bytes"), std::string::npos) << failed->dump();
  EXPECT_TRUE(failed->at("snapshot").is_null()) << failed->dump();
  EXPECT_TRUE(tmp_files().empty());

  // The next run (nothing changes during it) is written and holds the rewritten file.
  auto next = wait_cut_after(cut->at_ms, 60s);
  ASSERT_TRUE(next) << "no run after the failed one\n" << log_text("backupd");
  auto written = wait_outcome(*next, 60s);
  ASSERT_TRUE(written) << "the run after the failed one did not end";
  ASSERT_EQ(written->rfind("written " + next->id + ".tgz", 0), 0u) << *written;
  std::string out = scratch_dir("restored");
  auto restore = bkptool({"restore", kHost, src(), "--to", out, "--snapshot", next->id}, 60s);
  ASSERT_EQ(restore.exit_code(), 0) << restore.output;
  EXPECT_EQ(compare_trees(src(), out, {.root_attrs = false}), "");
}

}  // namespace
}  // namespace bkp::it
