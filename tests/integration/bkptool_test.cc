// bkptool against a real backupd and node (docs/PROTOCOL.md "Control", DESIGN.md invariant 8):
//
// - every documented failure exits with its documented code and says what went wrong (matched
//   by a key phrase), and with --json prints {"ok": false, "code": ...};
// - `history --json` is the documented RUN object, with dates that parse, sizes for written runs,
//   and null where there is nothing.
#include <unistd.h>

#include "tests/integration/control.h"
#include "tests/integration/workload.h"

namespace bkp::it {
namespace {

class BkptoolTest : public ControlTest {
 protected:
  // Runs bkptool ARGS; checks the exit code and that the output contains phrase. With --json
  // too: one document with ok false and, when given, that code.
  void expect_failure(const std::vector<std::string>& args, int exit_code,
                      const std::string& phrase, const std::string& json_code = "") {
    std::string cmd;
    for (const auto& a : args) cmd += " " + a;
    auto r = bkptool(args);
    EXPECT_EQ(r.exit_code(), exit_code) << "bkptool" << cmd << ": " << r.output;
    EXPECT_NE(r.err.find(phrase), std::string::npos)
        << "bkptool" << cmd << ": expected '" << phrase << "' in: " << r.err;
    std::vector<std::string> json_args{"--json"};
    json_args.insert(json_args.end(), args.begin(), args.end());
    auto j = bkptool(json_args);
    EXPECT_EQ(j.exit_code(), exit_code) << "bkptool --json" << cmd << ": " << j.output;
    Json doc = Json::parse(j.out, nullptr, false);
    ASSERT_TRUE(doc.is_object()) << "bkptool --json" << cmd << " printed: " << j.out;
    EXPECT_EQ(doc.value("ok", true), false) << doc.dump();
    EXPECT_NE(doc.value("error", "").find(phrase), std::string::npos) << doc.dump();
    if (!json_code.empty()) {
      EXPECT_EQ(doc.value("code", ""), json_code) << doc.dump();
    }
  }
};

TEST_F(BkptoolTest, FailuresHaveTheirMessagesAndExitCodes) {
  ASSERT_TRUE(start_all("1h", /*with_replicators=*/false));
  const std::string node = std::to_string(node_port());

  expect_failure({"history", kHost, "/no/such/volume"}, 4, "is not registered", "unknown_volume");
  expect_failure({"register", kHost, node, src(), "--every", "1h"}, 5, "is already registered",
                 "duplicate");
  expect_failure({"register", kHost, node, "/srv/elsewhere", "--every", "0"}, 2, "--every '0'");
  expect_failure({"register", kHost, node, "/srv/elsewhere", "--every", "abc"}, 2,
                 "--every 'abc'");
  // The node at HOST:PORT serves src, not the path asked for; its own sentence comes through.
  expect_failure({"register", kHost, node, "/srv/elsewhere", "--every", "1h"}, 6,
                 "this node serves " + src() + ", not /srv/elsewhere", "wrong_path");

  // Nothing listens there: bkptool itself cannot reach backupd, by TCP or by a socket path.
  uint16_t closed = free_port();
  ASSERT_NE(closed, 0);
  for (const std::string& server : {"127.0.0.1:" + std::to_string(closed),
                                    scratch_dir("gone") + "/control.sock"}) {
    auto r = testutil::run_command({Binaries::find().bkptool, "--server", server, "--no-tls", "list"});
    EXPECT_EQ(r.exit_code(), 3) << r.output;
    EXPECT_NE(r.err.find("cannot reach backupd"), std::string::npos) << r.err;
  }

  // None of it disturbed the registration.
  std::string why;
  auto vols = volumes(&why);
  ASSERT_TRUE(vols) << why;
  EXPECT_EQ(vols->size(), 1u) << vols->dump(2);
}

TEST_F(BkptoolTest, HistoryJsonCarriesTheDocumentedRunFields) {
  time_t t0 = time(nullptr);
  ASSERT_TRUE(start_all("2s", /*with_replicators=*/false));
  std::string why;
  auto fresh = runs_after_change([&] { put(src("file.txt"), std::string(50000, 'h')); }, &why);
  ASSERT_TRUE(fresh) << why;
  ASSERT_GE(count_status(*fresh, "written"), 1u) << Json(*fresh).dump(2);
  // And one with no change before it.
  ASSERT_TRUE(wait_next_run(run_ids(), 30s, &why)) << why;

  auto all = runs(&why);
  ASSERT_TRUE(all) << why;
  ASSERT_GE(all->size(), 2u);
  auto snaps = snapshots(&why);
  ASSERT_TRUE(snaps) << why;
  time_t now = time(nullptr);
  Json previous;
  for (const auto& run : *all) {
    SCOPED_TRACE(run.dump());
    for (const char* key : {"id", "started_at", "ended_at", "status", "snapshot",
                            "snapshot_bytes", "duration_ms", "changed_bytes", "changed_files",
                            "error"}) {
      EXPECT_TRUE(run.contains(key)) << "missing " << key;
    }
    if (::testing::Test::HasFailure()) break;
    auto s = parse_iso8601(run.value("started_at", ""));
    auto e = parse_iso8601(run.value("ended_at", ""));
    ASSERT_TRUE(s && e) << "dates must be UTC ISO 8601";
    EXPECT_GE(*s, t0 - 1);
    EXPECT_LE(*s, *e);
    EXPECT_LE(*e, now + 1);
    ASSERT_TRUE(run["duration_ms"].is_number_integer());
    EXPECT_GE(run["duration_ms"].get<int64_t>(), 0);
    EXPECT_LE(run["duration_ms"].get<int64_t>(), (*e - *s + 1) * 1000);
    EXPECT_TRUE(run["changed_bytes"].is_number_integer());
    EXPECT_TRUE(run["changed_files"].is_number_integer());
    EXPECT_TRUE(run["snapshot_bytes"].is_number_integer());
    std::string status = run.value("status", "");
    if (status == "written") {
      ASSERT_TRUE(run["snapshot"].is_string());
      EXPECT_GT(run["snapshot_bytes"].get<int64_t>(), 0);
      bool listed = false;
      for (const auto& snap : *snaps) listed = listed || snap.value("id", "") == run["snapshot"];
      EXPECT_TRUE(listed) << "the run's snapshot is not listed: " << snaps->dump();
      EXPECT_TRUE(run["error"].is_null());
    } else if (status == "unchanged") {
      EXPECT_TRUE(run["snapshot"].is_null());
      EXPECT_TRUE(run["error"].is_null());
    } else {
      EXPECT_EQ(status, "failed");
      EXPECT_TRUE(run["error"].is_string());
    }
    // Newest first.
    if (!previous.is_null()) {
      EXPECT_GE(parse_iso8601(previous.value("started_at", "")).value_or(0), *s);
    }
    previous = run;
  }

  // --limit N keeps the newest N.
  auto limited = bkptool_json({"history", kHost, src(), "--limit", "1"}, &why);
  ASSERT_TRUE(limited) << why;
  ASSERT_EQ((*limited)["runs"].size(), 1u);
  const Json& newest = (*limited)["runs"][0];
  if (newest["id"] != (*all)[0]["id"]) {  // a run may have ended since: then it is newer
    EXPECT_GE(parse_iso8601(newest.value("started_at", "")).value_or(0),
              parse_iso8601((*all)[0].value("started_at", "")).value_or(0));
  }
}

}  // namespace
}  // namespace bkp::it
