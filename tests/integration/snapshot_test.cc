// Scheduled snapshots (DESIGN.md §4, invariants 5 and 6), through the real bkptool:
//
// - A registered volume that changed gets a snapshot; one that did not gets an "unchanged" run
//   and no new file; after a dozen changed runs exactly ten archives remain, the history lists
//   every run with its size and dates, and the newest archive restores to exactly the source at
//   the cut (content, types, modes, owners, symlinks, hard links, mtimes). That archive is a
//   series of gzip members (server/gzip_members.h): gzip -t, GNU tar, bsdtar and Python's tarfile
//   read it whole, and each extracts the source from it.
// - backupd killed with SIGKILL while it writes an archive leaves no partial file under any
//   name after a restart; every archive listed opens and lists fully; the interrupted run is in
//   the history as failed.
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>

#include <filesystem>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "tests/integration/control.h"
#include "tests/integration/workload.h"
#include "tests/testutil/daemon.h"
#include "tests/testutil/wait.h"

namespace bkp::it {
namespace {

// A program's absolute path; these are the Debian packages scripts/setup.sh installs.
constexpr const char* kGzip = "/usr/bin/gzip";
constexpr const char* kGnuTar = "/usr/bin/tar";
constexpr const char* kBsdtar = "/usr/bin/bsdtar";    // libarchive-tools
constexpr const char* kPython = "/usr/bin/python3";

// Counts the gzip members of argv[1] (each must end: a truncated one exits 1), then extracts it
// with tarfile into argv[2] as root would (owners by number, every entry kind), and prints the
// count.
constexpr const char* kPythonExtract = R"(
import sys, tarfile, zlib
path, out = sys.argv[1:]
data, members = open(path, 'rb').read(), 0
while data:
    d = zlib.decompressobj(31)
    d.decompress(data)
    if not d.eof:
        sys.exit('gzip member %d does not end' % members)
    data, members = d.unused_data, members + 1
trusted = {'filter': 'fully_trusted'} if hasattr(tarfile, 'fully_trusted_filter') else {}
with tarfile.open(path, 'r:gz') as t:
    t.extractall(out, numeric_owner=True, **trusted)
print(members)
)";

class SnapshotTest : public ControlTest {
 protected:
  // gzip -t, tar -tzf and bsdtar -tzf read `archive` whole; GNU tar, bsdtar and Python's tarfile
  // each extract it to a tree equal to `source` (bsdtar leaves the mtime of the directory it
  // extracts into, "./", as extracting made it; tarfile keeps neither xattrs nor exact mtimes).
  // The archive has at least `min_members` gzip members.
  void expect_every_reader_extracts(const std::string& archive, const std::string& source,
                                    int min_members) {
    for (const char* reader : {kGzip, kGnuTar, kBsdtar}) {
      std::string flag = reader == kGzip ? "-t" : "-tzf";
      auto r = testutil::run_command({reader, flag, archive}, 60s);
      EXPECT_EQ(r.exit_code(), 0) << reader << " " << flag << ": " << r.output;
    }
    struct Extract {
      std::vector<std::string> argv;
      std::string dir;
      testutil::CompareOptions compare;
    };
    std::string gnu = scratch_dir("gnu-tar"), bsd = scratch_dir("bsdtar");
    std::string py = scratch_dir("tarfile");
    const Extract extracts[] = {
        {{kGnuTar, "--xattrs", "--xattrs-include=*", "-xpzf", archive, "-C", gnu}, gnu, {}},
        {{kBsdtar, "--xattrs", "-xpzf", archive, "-C", bsd}, bsd, {.root_attrs = false}},
        {{kPython, "-c", kPythonExtract, archive, py}, py, {.mtime = false, .xattrs = false}},
    };
    for (const auto& x : extracts) {
      auto r = testutil::run_command(x.argv, 120s);
      ASSERT_EQ(r.exit_code(), 0) << x.argv[0] << ": " << r.output;
      EXPECT_EQ(compare_trees(source, x.dir, x.compare), "") << x.argv[0] << " extracted it";
      if (x.argv[0] == kPython) {
        EXPECT_GE(std::stoi(r.out), min_members) << r.out;
      }
    }
  }
};

TEST_F(SnapshotTest, ChangedRunsWriteUnchangedRunsDoNotAndTenAreKept) {
  ASSERT_TRUE(start_all("2s", /*with_replicators=*/false));
  std::string why;

  // A change: a snapshot appears. The big file makes its tar stream several gzip members long.
  auto fresh = runs_after_change(
      [&] {
        apply_mix(src(), 30);
        write_big_file(src("big.bin"), 3 * kMiB, 1200);
      },
      &why);
  ASSERT_TRUE(fresh) << why;
  ASSERT_GE(count_status(*fresh, "written"), 1u) << Json(*fresh).dump(2);
  auto snaps = snapshots(&why);
  ASSERT_TRUE(snaps) << why;
  ASSERT_FALSE(snaps->empty());

  // No change: the next run (its cut is later than the last one above) is "unchanged" and
  // writes nothing.
  auto files_before = tgz_files();
  auto next = wait_next_run(run_ids(), 30s, &why);
  ASSERT_TRUE(next) << why;
  EXPECT_EQ(next->value("status", ""), "unchanged") << next->dump();
  EXPECT_TRUE(next->at("snapshot").is_null()) << next->dump();
  EXPECT_EQ(tgz_files(), files_before) << "an unchanged run wrote a file";

  // Twelve runs with a change each. The last change is made before the last of them and
  // nothing changes afterwards, so the source is the last cut.
  constexpr int kRuns = 12;
  for (int i = 0; i < kRuns; ++i) {
    fresh = runs_after_change(
        [&] {
          put(src("counter.txt"), "run " + std::to_string(i) + "\n");
          write_at(src("data/offsets.bin"), 100 + i * 7, "round " + std::to_string(i));
        },
        &why);
    ASSERT_TRUE(fresh) << "round " << i << ": " << why;
    ASSERT_GE(count_status(*fresh, "written"), 1u) << "round " << i << ": "
                                                    << Json(*fresh).dump(2);
  }

  // Exactly ten archives kept (rotation runs as part of the run), none partial.
  ASSERT_TRUE(testutil::wait_until([&] { return tgz_files().size() == 10 || expired(); }, 10s))
      << tgz_files().size() << " archives in " << snapshots_dir();
  EXPECT_TRUE(tmp_files().empty());
  snaps = snapshots(&why);
  ASSERT_TRUE(snaps) << why;
  ASSERT_EQ(snaps->size(), 10u) << snaps->dump(2);
  std::vector<std::string> listed;
  for (const auto& s : *snaps) listed.push_back(s.value("name", ""));
  std::sort(listed.begin(), listed.end());
  EXPECT_EQ(listed, tgz_files());

  // The history keeps every run, with sizes and dates.
  auto all = runs(&why);
  ASSERT_TRUE(all) << why;
  int written = 0;
  for (const auto& run : *all) {
    auto s = parse_iso8601(run.value("started_at", ""));
    auto e = parse_iso8601(run.value("ended_at", ""));
    EXPECT_TRUE(s && e && *s <= *e) << run.dump();
    if (run.value("status", "") == "written") {
      ++written;
      EXPECT_GT(run.value("snapshot_bytes", uint64_t{0}), 0u) << run.dump();
      EXPECT_TRUE(run.at("snapshot").is_string()) << run.dump();
    }
  }
  EXPECT_GE(written, kRuns + 1) << all->dump(2);

  // The newest archive restores to the source, holes included (sparse entries).
  std::string out = scratch_dir("restored");
  auto restore = bkptool({"restore", kHost, src(), "--to", out, "--force"}, 120s);
  ASSERT_EQ(restore.exit_code(), 0) << restore.output;
  EXPECT_EQ(compare_trees(src(), out, {.root_attrs = false}), "")
      << "(an mtime with .000000000 on one side: the archive kept whole seconds only; ustar "
         "headers do, pax headers keep nanoseconds)";
  // The volume root's own mode, owner and mtime are part of the cut too.
  EXPECT_EQ(compare_trees(src(), out, {}), "")
      << "the restored root directory lacks the volume root's attributes";

  // The same archive through the common readers: 3 MiB of big.bin alone is 4 members.
  expect_every_reader_extracts(snapshots_dir() + "/" + tgz_files().back(), src(), 4);
}

TEST_F(SnapshotTest, KilledWhileWritingLeavesNoPartialSnapshot) {
  ASSERT_TRUE(start_all("2s", /*with_replicators=*/false));
  put(src("small.txt"), "a small file\n");
  write_big_file(src("big.bin"), 300 * kMiB, 4000);  // random: gzip cannot make it quick
  std::string why;
  auto converged = converged_at(&why);
  ASSERT_TRUE(converged) << why;

  // Wait for a run to start writing an archive of the whole volume, then kill backupd.
  std::string tmp;
  testutil::wait_until(
      [&] {
        auto t = tmp_files();
        if (!t.empty()) tmp = t.front();
        return !tmp.empty() || expired() || !backupd()->alive();
      },
      60s, 5ms);
  ASSERT_FALSE(tmp.empty()) << "no run started writing within 60 s";
  auto before = runs(&why);
  ASSERT_TRUE(before) << why;
  time_t killed_at = time(nullptr);
  uint16_t port = this->port();
  ASSERT_TRUE(kill_server());
  ASSERT_EQ(access((snapshots_dir() + "/" + tmp).c_str(), F_OK), 0)
      << "the archive was finished before the kill; the test proves nothing (make the volume "
         "bigger)";

  ASSERT_TRUE(start_server(port));
  // The partial archive is gone (a new run may already be writing another one).
  EXPECT_TRUE(testutil::wait_until(
      [&] {
        auto t = tmp_files();
        return std::find(t.begin(), t.end(), tmp) == t.end() || expired();
      },
      10s))
      << tmp << " is still there after the restart";
  auto on_disk = tgz_files();
  auto snaps = snapshots(&why);
  ASSERT_TRUE(snaps) << why;
  auto on_disk_after = tgz_files();  // a run may have finished meanwhile
  std::vector<std::string> listed;
  for (const auto& s : *snaps) {
    std::string name = s.value("name", "");
    listed.push_back(name);
    std::string listing;
    EXPECT_TRUE(tar_lists(snapshots_dir() + "/" + name, &listing)) << name << ":\n" << listing;
  }
  std::sort(listed.begin(), listed.end());
  EXPECT_TRUE(listed == on_disk || listed == on_disk_after)
      << "the snapshots listed are not the archives on disk: " << snaps->dump(2);
  EXPECT_EQ(std::find(listed.begin(), listed.end(), tmp.substr(5)), listed.end())
      << "the interrupted archive is listed as a snapshot";

  // The interrupted run is in the history, failed, dated before the kill.
  auto after = runs(&why);
  ASSERT_TRUE(after) << why;
  std::set<std::string> known;
  for (const auto& run : *before) known.insert(run.at("id").dump());
  bool found = false;
  for (const auto& run : *after) {
    if (known.count(run.at("id").dump())) continue;
    auto started = parse_iso8601(run.value("started_at", ""));
    if (!started || *started > killed_at) continue;
    found = true;
    EXPECT_EQ(run.value("status", ""), "failed") << run.dump();
    EXPECT_TRUE(run.at("error").is_string()) << run.dump();
    EXPECT_TRUE(run.at("snapshot").is_null()) << run.dump();
  }
  EXPECT_TRUE(found) << "no run started before the kill was added to the history:\n"
                     << after->dump(2);
}

// A unix socket in the volume (an application's control socket, bound through the mount) used
// to fail every run; now the run is written, says which sockets it left out, and the fifo next
// to it is archived.
TEST_F(SnapshotTest, ASocketAndAFifoDoNotFailARun) {
  ASSERT_TRUE(start_all("2s", /*with_replicators=*/false));
  std::string why;
  auto fresh = runs_after_change(
      [&] {
        mkdirs(src("run"));
        must(mkfifo(src("run/pipe").c_str(), 0640), "mkfifo");
        UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        must(s ? 0 : -1, "socket");
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::string path = src("run/app.sock");
        ASSERT_LT(path.size(), sizeof(addr.sun_path)) << path;
        path.copy(addr.sun_path, path.size());
        must(::bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), "bind");
      },
      &why);
  ASSERT_TRUE(fresh) << why;
  const Json* written = nullptr;
  for (const Json& r : *fresh) {
    if (r.value("status", "") == "written") written = &r;
  }
  ASSERT_NE(written, nullptr) << Json(*fresh).dump(2);
  EXPECT_TRUE(written->at("error").is_null()) << written->dump();
  EXPECT_NE(written->value("warnings", "").find("run/app.sock"), std::string::npos)
      << written->dump();
  auto history = bkptool({"history", kHost, src()});
  EXPECT_EQ(history.exit_code(), 0) << history.output;
  EXPECT_NE(history.output.find("written with warnings"), std::string::npos) << history.output;
}

// One byte at 64 GiB - 1 made every run archive 64 GiB of zeros (minutes of gzip, ingest paused)
// and cancelling such a run hung while the unfinished archive padded the entry. Holes are now
// stored as a sparse map: the run takes a moment, the archive is tiny, and unregistering the
// volume right after is prompt.
TEST_F(SnapshotTest, AHugeSparseFileIsArchivedAsItsDataAlone) {
  ASSERT_TRUE(start_all("2s", /*with_replicators=*/false));
  write_at(src("sparse.bin"), (uint64_t{64} << 30) - 1, "x");
  // Not compared byte for byte: that would read 64 GiB through the mount.
  ASSERT_TRUE(testutil::wait_until(
      [&] {
        struct stat st{};
        return (stat((mirror() + "/sparse.bin").c_str(), &st) == 0 &&
                static_cast<uint64_t>(st.st_size) == uint64_t{64} << 30) ||
               expired();
      },
      60s))
      << "the sparse file never reached the mirror";
  // Runs every 2 s: within a few of them one archives the file (GNU tar reads it back).
  std::string why;
  std::optional<Json> written;
  for (int i = 0; i < 5 && !written; ++i) {
    auto next = wait_next_run(run_ids(), 60s, &why);
    ASSERT_TRUE(next) << why;
    std::string listing;
    if (next->value("status", "") == "written" &&
        tar_lists(snapshots_dir() + "/" + next->value("snapshot", "") + ".tgz", &listing) &&
        listing.find("sparse.bin") != std::string::npos) {
      written = next;
    }
  }
  ASSERT_TRUE(written) << "no run archived the sparse file";
  EXPECT_LT(written->value("snapshot_bytes", uint64_t{0}), uint64_t{1} << 20) << written->dump();
  auto t0 = std::chrono::steady_clock::now();
  auto r = bkptool({"unregister", kHost, src()}, 60s);
  EXPECT_EQ(r.exit_code(), 0) << r.output;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 15s) << "unregister waited for a run";
  EXPECT_TRUE(testutil::wait_until([&] { return tmp_files().empty() || expired(); }, 15s))
      << "a cancelled run's archive is still being written";
}

}  // namespace
}  // namespace bkp::it
