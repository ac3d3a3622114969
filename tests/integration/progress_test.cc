// Progress as an operator without a terminal sees it (issue 4): a baseline of a few hundred MiB,
// every daemon logging with --progress-every 0.2 into a file (not a tty, so status lines rather
// than a bar). backupfs must name the files it ships, climb without going back, and end with a
// 100% line for the whole tree; backupd must report the ingest of the same baseline and its
// stream to each replica (naming files); each replicator must report what it received.
#include <regex>
#include <sstream>

#include "tests/integration/cluster.h"
#include "tests/integration/workload.h"
#include "tests/testutil/wait.h"

namespace bkp::it {
namespace {

constexpr uint64_t kBigFile = 96 * kMiB;
constexpr int kBigFiles = 3;
constexpr int kSmallFiles = 100;

class ProgressTest : public ClusterTest {
 protected:
  // Lines of a log that contain needle.
  std::vector<std::string> lines_with(const std::string& log, const std::string& needle) {
    std::vector<std::string> out;
    std::istringstream in(log);
    for (std::string line; std::getline(in, line);) {
      if (line.find(needle) != std::string::npos) out.push_back(line);
    }
    return out;
  }

  // Waits (bounded) until the log of `name` has a line containing every needle.
  bool log_has(const std::string& name, const std::vector<std::string>& needles) {
    return testutil::wait_until(
        [&] {
          std::istringstream in(log_text(name));
          for (std::string line; std::getline(in, line);) {
            bool all = true;
            for (const auto& n : needles) all = all && line.find(n) != std::string::npos;
            if (all) return true;
          }
          return expired();
        },
        15s) && !expired();
  }
};

TEST_F(ProgressTest, BaselineLinesNameFilesAndReachHundredPercent) {
  // The tree exists before backupfs is mounted over it, so all of it is the baseline.
  for (int i = 0; i < kBigFiles; ++i) {
    write_big_file(src("big" + std::to_string(i) + ".bin"), kBigFile, 100 + i);
  }
  mkdirs(src("small"));
  for (int i = 0; i < kSmallFiles; ++i) {
    put(src("small/f" + std::to_string(i)), random_string(16 * 1024, 1000 + i));
  }
  progress_every = "0.2";
  ASSERT_TRUE(start_all());
  ASSERT_EQ(wait_converged(180s), "");

  const std::string subject = std::string(kHost) + ":" + src();
  // backupfs: the baseline's final line, with the whole tree's size.
  ASSERT_TRUE(log_has("backupfs", {"baseline " + subject + ": 100%"})) << log_text("backupfs");
  std::string fs_log = log_text("backupfs");
  EXPECT_EQ(fs_log.find('\r'), std::string::npos) << "a bar was drawn into a file";

  // Periodic lines: percentages never go back, and they name files of the tree.
  std::regex line_re("baseline " + std::regex_replace(subject, std::regex(R"([.^$|()\[\]{}*+?\\/])"),
                                                     R"(\$&)") +
                     R"(: (\d+)%, ([0-9.]+ \w+) of ([0-9.]+ \w+).*)");
  int last = -1, periodic = 0;
  bool named = false;
  for (const auto& line : lines_with(fs_log, "baseline " + subject + ": ")) {
    std::smatch m;
    if (!std::regex_search(line, m, line_re)) continue;
    int pct = std::stoi(m[1]);
    EXPECT_GE(pct, last) << line;
    last = pct;
    ++periodic;
    if (line.find(", now big") != std::string::npos || line.find(", now small/f") != std::string::npos) {
      named = true;
    }
  }
  EXPECT_GE(periodic, 2) << "expected several status lines during a ~300 MiB baseline\n" << fs_log;
  EXPECT_TRUE(named) << "no status line named a file being shipped\n" << fs_log;
  auto done = lines_with(fs_log, "baseline " + subject + ": 100%, ");
  ASSERT_EQ(done.size(), 1u) << fs_log;
  EXPECT_NE(done[0].find(" MiB in "), std::string::npos) << done[0];
  // 3 x 96 MiB + 100 x 16 KiB = 289.6 MiB
  EXPECT_NE(done[0].find("100%, 289.6 MiB in"), std::string::npos) << done[0];

  // backupd: the ingest of the same baseline, and each replica's stream.
  EXPECT_TRUE(log_has("backupd", {"baseline " + subject + ": 100%, 289.6 MiB"}))
      << log_text("backupd");
  EXPECT_TRUE(log_has("backupd", {subject + " to r1: ", "%, ", ", now "})) << log_text("backupd");
  for (const char* r : {"r1", "r2"}) {
    EXPECT_TRUE(log_has("backupd", {subject + " to " + r + ": 100%"})) << log_text("backupd");
    // The replicator: what it received, to the end. A node's baseline reaches a replica as the
    // mirror fills, batch by batch, so each of its episodes may end before a periodic line is
    // due: whether one names a file depends on timing (ReceiveProgress's naming is unit-tested).
    EXPECT_TRUE(log_has(r, {subject + ": 100%"})) << log_text(r);
  }
}

}  // namespace
}  // namespace bkp::it
