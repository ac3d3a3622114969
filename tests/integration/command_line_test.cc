// What a person sees of the command lines and logs, on the real binaries (issue 14):
//
// - `--version` of backupd, backupfs, replicator and bkptool: one line naming the program and
//   the same build;
// - a mistyped bkptool command gets the nearest one suggested, exit 2 (usage);
// - `bkptool register --help` says what --every takes;
// - log lines carry the syslog prefix ("<6>") only where journald reads them (stderr is the
//   stream $JOURNAL_STREAM names): a restore's progress in a pipe is plain text, even with
//   $JOURNAL_STREAM inherited from a service, while a daemon writing to the journal keeps it.
#include <sys/stat.h>

#include <fstream>
#include <regex>
#include <sstream>

#include "tests/integration/control.h"
#include "tests/integration/workload.h"

namespace bkp::it {
namespace {

class CommandLineTest : public ControlTest {
 protected:
  // "DEVICE:INODE" of path, as systemd puts it in $JOURNAL_STREAM.
  static std::string journal_stream_of(const std::string& path) {
    struct stat st {};
    EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
    return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
  }

  // The lines of text that start with a syslog priority prefix ("<6>").
  static std::vector<std::string> prefixed_lines(const std::string& text) {
    static const std::regex kPrefix(R"(^<[0-7]>)");
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
      if (std::regex_search(line, kPrefix)) out.push_back(line);
    }
    return out;
  }
};

TEST_F(CommandLineTest, EveryBinaryPrintsItsVersion) {
  const Binaries& bin = binaries();
  std::string build;  // what follows the name: the same for all four
  for (const auto& [name, path] : std::vector<std::pair<std::string, std::string>>{
           {"backupd", bin.backupd},
           {"backupfs", bin.backupfs},
           {"replicator", bin.replicator},
           {"bkptool", bin.bkptool}}) {
    auto r = testutil::run_command({path, "--version"});
    EXPECT_EQ(r.exit_code(), 0) << name << ": " << r.output;
    std::smatch m;
    std::regex re(name + R"( (\d+\.\d+\.\d+(?: \(git [0-9a-f]{7,}\))?)\n)");
    ASSERT_TRUE(std::regex_match(r.out, m, re)) << name << " --version printed: " << r.output;
    EXPECT_EQ(r.err, "") << name;
    if (build.empty()) build = m[1];
    EXPECT_EQ(m[1], build) << name << " is another build";
  }
}

TEST_F(CommandLineTest, AMistypedCommandGetsTheNearestSuggested) {
  auto r = bkptool({"histroy", kHost, "/srv/app"});
  EXPECT_EQ(r.exit_code(), 2) << r.output;
  EXPECT_EQ(r.err, "bkptool: unknown command 'histroy'; did you mean 'history'?\n");
  EXPECT_EQ(r.out, "");

  auto j = bkptool({"--json", "histroy"});
  EXPECT_EQ(j.exit_code(), 2) << j.output;
  Json doc = Json::parse(j.out, nullptr, false);
  ASSERT_TRUE(doc.is_object()) << j.out;
  EXPECT_EQ(doc.value("code", ""), "usage") << doc.dump();
  EXPECT_EQ(doc.value("error", ""), "unknown command 'histroy'; did you mean 'history'?");

  // The verbs of a command group too.
  r = bkptool({"replica", "lsit"});
  EXPECT_EQ(r.exit_code(), 2) << r.output;
  EXPECT_EQ(r.err, "bkptool: unknown command 'replica lsit'; did you mean 'replica list'?\n");

  // Nothing near: the commands are listed instead.
  r = bkptool({"frobnicate"});
  EXPECT_EQ(r.exit_code(), 2) << r.output;
  EXPECT_NE(r.err.find("unknown command 'frobnicate' (register, unregister, list, history, "
                       "snapshots, restore, run, status, set, verify, replica, operator) (see "
                       "bkptool --help)"),
            std::string::npos)
      << r.err;
  r = bkptool({"replica"});
  EXPECT_EQ(r.exit_code(), 2) << r.output;
  EXPECT_NE(r.err.find("'replica' needs a command (add, remove, list)"), std::string::npos)
      << r.err;
}

TEST_F(CommandLineTest, RegisterHelpSaysWhatEveryTakes) {
  auto r = bkptool({"register", "--help"});
  EXPECT_EQ(r.exit_code(), 0) << r.output;
  EXPECT_NE(r.out.find("--every PERIOD"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("30s, 15m, 2h, 1d"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("a bare number is minutes"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("MINUTES"), std::string::npos) << r.out;
}

TEST_F(CommandLineTest, RestoreProgressInAPipeIsPlainText) {
  ASSERT_TRUE(start_all("2s", /*with_replicators=*/false));
  std::string why;
  auto fresh = runs_after_change([&] { put(src("file.txt"), random_string(300000, 7)); }, &why);
  ASSERT_TRUE(fresh) << why;
  ASSERT_GE(count_status(*fresh, "written"), 1u) << Json(*fresh).dump(2);

  // stderr is a pipe; $JOURNAL_STREAM, as a shell started by a service inherits it, names
  // another file (backupd's log).
  auto r = testutil::run_command({"/usr/bin/env",
                                  "JOURNAL_STREAM=" + journal_stream_of(log_path("backupd")),
                                  binaries().bkptool, "--server", control_socket(), "restore",
                                  kHost, src(), "--to", scratch_dir("restored")},
                                 60s);
  ASSERT_EQ(r.exit_code(), 0) << r.output;
  EXPECT_EQ(prefixed_lines(r.err), std::vector<std::string>{}) << r.err;
  std::string subject = std::string(kHost) + ":" + src();
  EXPECT_NE(("\n" + r.err).find("\nbkptool info: restore " + subject), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find('\r'), std::string::npos) << "a bar was drawn into a pipe: " << r.err;
}

TEST_F(CommandLineTest, OnlyADaemonWritingToTheJournalPrefixesItsLines) {
  // backupd's stderr is its log file, which $JOURNAL_STREAM names, as systemd would name the
  // journal's socket; the replicators' is a log file too, but nothing names it.
  std::ofstream(log_path("backupd")).close();
  backupd_env.push_back("JOURNAL_STREAM=" + journal_stream_of(log_path("backupd")));
  ASSERT_TRUE(start_all());
  put(src("file.txt"), "hello\n");
  ASSERT_EQ(wait_converged(), "");

  std::string backupd = log_text("backupd");
  EXPECT_NE(backupd.find("<6>backupd info: listening on "), std::string::npos) << backupd;
  for (const char* r : {"r1", "r2"}) {
    std::string log = log_text(r);
    EXPECT_NE(log.find("replicator info: "), std::string::npos) << log;
    EXPECT_EQ(prefixed_lines(log), std::vector<std::string>{}) << log;
  }
}

}  // namespace
}  // namespace bkp::it
