// bkptool status: the request it sends, its --watch options, and the blocks people read,
// rendered from STATUS objects as backupd sends them (docs/PROTOCOL.md "Control"): bars for
// running transfers, and nothing invented where the server says null.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <optional>
#include <string>

#include "tools/args.h"
#include "tools/commands.h"
#include "tools/status.h"
#include "tools/views.h"

namespace bkp::tools {
namespace {

// Dates in the blocks are local: render them in UTC.
class StatusViewTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const char* tz = std::getenv("TZ")) saved_ = tz;
    setenv("TZ", "UTC0", 1);
    tzset();
  }
  void TearDown() override {
    if (saved_) {
      setenv("TZ", saved_->c_str(), 1);
    } else {
      unsetenv("TZ");
    }
    tzset();
  }

 private:
  std::optional<std::string> saved_;
};

Json transfer(const char* phase, int percent, uint64_t done, uint64_t total, uint64_t files_left,
              Json file) {
  return Json{{"phase", phase},
              {"percent", percent},
              {"done_bytes", done},
              {"total_bytes", total},
              {"files_left", files_left},
              {"file", std::move(file)},
              {"rate_bytes_per_second", 12582912.0},
              {"elapsed_seconds", 6.5}};
}

Json replica(const char* name, bool connected, uint64_t ops, double seconds, Json transfer) {
  return Json{{"name", name},          {"connected", connected}, {"lag_ops", ops},
              {"lag_bytes", ops * 1024}, {"lag_files", ops / 2},     {"lag_seconds", seconds},
              {"transfer", std::move(transfer)}, {"last_error", nullptr},
              {"last_error_at", nullptr}};
}

// A volume in the middle of its baseline, with one replica catching up and one in sync.
Json busy_status() {
  return Json{{"host", "web1"},
              {"address", "10.0.0.7"},
              {"port", 7701},
              {"path", "/srv/app"},
              {"every_seconds", 300},
              {"registered_at", "2026-11-26T00:00:00Z"},
              {"connected", true},
              {"last_error", nullptr},
              {"lag_ops", 12},
              {"lag_bytes", 335544320},
              {"lag_seconds", 4.2},
              {"lag_updated_at", "2026-11-26T01:02:03Z"},
              {"last_run", nullptr},
              {"next_run", "2026-11-26T01:07:03Z"},
              {"lag_files", 3},
              {"current_file", "data/big.bin"},
              {"transfer", transfer("baseline", 25, 83886080, 335544320, 1204, "data/big.bin")},
              {"replicas", Json::array({replica("r1", true, 0, 0, nullptr),
                                        replica("replica-two", true, 8, 1.5,
                                                transfer("catch-up", 50, 1048576, 2097152, 0,
                                                         "logs/app.log"))})},
              {"last_snapshot", Json{{"id", "20261126T010203.000Z"},
                                     {"name", "20261126T010203.000Z.tgz"},
                                     {"created_at", "2026-11-26T01:02:03Z"},
                                     {"bytes", 12897485}}},
              {"copies", Json::array({Json{{"name", "mirror"}, {"state", "catching up"}},
                                      Json{{"name", "r1"}, {"state", "current"}},
                                      Json{{"name", "replica-two"}, {"state", "catching up"}}})},
              {"copies_wanted", 3},
              {"copies_current", 1},
              {"under_replicated", true}};
}

// A volume whose node is away: nothing moves, nothing was ever written.
Json idle_status() {
  return Json{{"host", "db1"},         {"address", "::1"},   {"port", 7702},
              {"path", "/srv/db"},     {"every_seconds", 3600},
              {"connected", false},    {"last_error", "connect: Connection refused"},
              {"lag_ops", 0},          {"lag_bytes", 0},
              {"lag_seconds", 0.0},    {"lag_updated_at", nullptr},
              {"last_run", nullptr},   {"next_run", nullptr},
              {"lag_files", 0},        {"current_file", nullptr},
              {"transfer", nullptr},   {"replicas", Json::array()},
              {"last_snapshot", nullptr}};
}

TEST(ProgressBarTest, FillsByPercentAndClamps) {
  EXPECT_EQ(progress_bar(0, 10), "[----------]   0%");
  EXPECT_EQ(progress_bar(45, 10), "[####------]  45%");
  EXPECT_EQ(progress_bar(100, 10), "[##########] 100%");
  EXPECT_EQ(progress_bar(-3, 10), "[----------]   0%");
  EXPECT_EQ(progress_bar(250, 10), "[##########] 100%");
  EXPECT_EQ(progress_bar(25), "[#####---------------]  25%");
}

TEST_F(StatusViewTest, BusyVolumeShowsBarsForEveryRunningTransfer) {
  EXPECT_EQ(render_status(Json::array({busy_status()})),
            "web1:/srv/app\n"
            "  node                 connected to 10.0.0.7:7701\n"
            "  lag                  4.2 s (12 ops, 3 files, 320.0 MiB)\n"
            "  in transfer          data/big.bin\n"
            "  ingest               baseline [#####---------------]  25%  80.0 MiB of 320.0 MiB, "
            "12.0 MiB/s, 1204 files left\n"
            "  copies               1 of 3 current: mirror catching up, r1 current, replica-two "
            "catching up; UNDER-REPLICATED\n"
            "  replica r1           connected, lag none\n"
            "  replica replica-two  connected, lag 1.5 s (8 ops, 4 files, 8.0 KiB)\n"
            "                       catch-up [##########----------]  50%  1.0 MiB of 2.0 MiB, "
            "12.0 MiB/s\n"
            "                       logs/app.log\n"
            "  last snapshot        20261126T010203.000Z.tgz, 12.3 MiB, 2026-11-26 01:02:03\n"
            "  next run             2026-11-26 01:07:03 (every 5 min)\n");
}

TEST_F(StatusViewTest, IngestNamesItsFileWhenTheNodeNamesNone) {
  Json s = busy_status();
  s["current_file"] = nullptr;
  s["replicas"] = Json::array();
  s.erase("copies");  // an older server
  std::string out = render_status(Json::array({s}));
  EXPECT_EQ(out.find("in transfer"), std::string::npos) << out;
  EXPECT_NE(out.find("1204 files left\n"
                     "                 data/big.bin\n"
                     "  replicas       none placed\n"),
            std::string::npos)
      << out;
}

TEST_F(StatusViewTest, NullFieldsShowAsAbsentNotAsZeroes) {
  EXPECT_EQ(render_status(Json::array({idle_status()})),
            "db1:/srv/db\n"
            "  node           disconnected from [::1]:7702; last error: connect: Connection "
            "refused\n"
            "  lag            none\n"
            "  replicas       none placed\n"
            "  last snapshot  none yet\n"
            "  next run       - (every 1 h)\n");
}

TEST_F(StatusViewTest, VolumesAreSeparatedByABlankLine) {
  std::string out = render_status(Json::array({busy_status(), idle_status()}));
  EXPECT_NE(out.find("(every 5 min)\n\ndb1:/srv/db\n"), std::string::npos) << out;
}

TEST_F(StatusViewTest, AReplicaShowsItsLastErrorNextToItsLag) {
  Json s = idle_status();
  Json full = replica("r2", false, 8, 61, nullptr);
  full["last_error"] = "replica reported: apply: write data/big.bin: No space left on device";
  full["last_error_at"] = "2026-11-26T01:02:03Z";
  s["replicas"] = Json::array({replica("r1", true, 0, 0, nullptr), full});
  std::string out = render_status(Json::array({s}));
  EXPECT_NE(out.find("  replica r1     connected, lag none\n"
                     "  replica r2     disconnected, lag 1 min 1 s (8 ops, 4 files, 8.0 KiB); "
                     "last error (2026-11-26 01:02:03): replica reported: apply: write "
                     "data/big.bin: No space left on device\n"),
            std::string::npos)
      << out;
}

TEST_F(StatusViewTest, AnOlderServerWithoutAddressShowsItsHost) {
  Json s = idle_status();
  s.erase("address");
  s["host"] = "::1";
  EXPECT_NE(render_status(Json::array({s})).find("disconnected from [::1]:7702"),
            std::string::npos);
}

TEST_F(StatusViewTest, MissingAndOddFieldsNeverThrow) {
  Json odd = Json::array({Json::object(), Json(3),
                          Json{{"transfer", "soon"},
                               {"replicas", Json::array({Json(1), Json{{"transfer", 2}}})},
                               {"last_snapshot", Json::array()},
                               {"current_file", 7},
                               {"connected", "yes"}}});
  EXPECT_NO_THROW(render_status(odd));
  std::string out = render_status(Json::array({Json::object()}));
  EXPECT_NE(out.find("  node           -"), std::string::npos) << out;
}

TEST(ReplicatorsViewTest, EachReplicatorWithWhereItServesRestores) {
  Json serving{{"name", "r1"}, {"connected", true}, {"measured", true},
               {"stored_bytes", 1048576}, {"free_bytes", 2097152}, {"round_trip_ms", 0.25},
               {"copies", 2}, {"restore_address", "10.0.0.5:7800"}};
  Json quiet{{"name", "r2"}, {"connected", false}, {"measured", false}, {"copies", 0},
             {"restore_address", ""}};
  std::string out = render_replicators(Json::array({serving, quiet}));
  EXPECT_NE(out.find("RESTORES AT"), std::string::npos) << out;
  EXPECT_NE(out.find("10.0.0.5:7800"), std::string::npos) << out;
  const std::string r2 = out.substr(out.find("r2"));
  EXPECT_EQ(r2.substr(r2.size() - 2), "-\n") << "no address: a dash: " << out;
}

TEST(StatusRequestTest, OneUnderReplicatedVolumeExitsNine) {
  Invocation inv;
  inv.command = "status";
  Json response{{"ok", true}, {"volumes", Json::array({busy_status()})}};
  EXPECT_EQ(present(inv, *make_request(inv), response).exit, Exit::kOk) << "every volume: 0";
  inv.host = "web1";
  inv.path = "/srv/app";
  EXPECT_EQ(present(inv, *make_request(inv), response).exit, Exit::kUnderReplicated);
  response["volumes"][0]["under_replicated"] = false;
  EXPECT_EQ(present(inv, *make_request(inv), response).exit, Exit::kOk);
}

TEST(StatusRequestTest, AllVolumesOrOne) {
  Invocation inv;
  inv.command = "status";
  EXPECT_EQ(make_request(inv)->dump(), R"({"cmd":"status"})");
  inv.host = "web1";
  inv.path = "/srv/app";
  EXPECT_EQ(make_request(inv)->dump(), R"({"cmd":"status","host":"web1","path":"/srv/app"})");
}

TEST(StatusRequestTest, HostWithoutPathIsAUsageError) {
  Invocation inv;
  inv.command = "status";
  inv.host = "web1";
  auto request = make_request(inv);
  ASSERT_FALSE(request.has_value());
  EXPECT_EQ(request.error().exit, Exit::kUsage);
  EXPECT_NE(request.error().message.find("HOST and PATH together"), std::string::npos);
  inv.path = "relative";
  request = make_request(inv);
  ASSERT_FALSE(request.has_value());
  EXPECT_EQ(request.error().exit, Exit::kUsage);
}

TEST(WatchOptionsTest, OneRequestUnlessWatching) {
  Invocation inv;
  inv.command = "status";
  inv.count = "junk";  // not looked at without --watch (CLI11 refuses --count without it)
  auto once = watch_options(inv, true);
  ASSERT_TRUE(once.has_value());
  EXPECT_FALSE(once->watching);
  EXPECT_EQ(once->count, 1u);

  inv.watch = true;
  inv.count = "0";
  auto forever = watch_options(inv, false);
  ASSERT_TRUE(forever.has_value());
  EXPECT_TRUE(forever->watching);
  EXPECT_EQ(forever->count, 0u);
  EXPECT_EQ(forever->interval, std::chrono::seconds(1));

  inv.count = "3";
  inv.interval = "0.25";
  auto bounded = watch_options(inv, false);
  ASSERT_TRUE(bounded.has_value());
  EXPECT_EQ(bounded->count, 3u);
  EXPECT_EQ(bounded->interval, std::chrono::milliseconds(250));

  inv.count = "-1";
  auto bad = watch_options(inv, false);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().exit, Exit::kUsage);
  EXPECT_NE(bad.error().message.find("--count '-1'"), std::string::npos);
}

TEST(IntervalTest, SecondsWithUpToThreeDecimals) {
  EXPECT_EQ(*parse_interval("1"), 1000);
  EXPECT_EQ(*parse_interval("0.1"), 100);
  EXPECT_EQ(*parse_interval("2.5"), 2500);
  EXPECT_EQ(*parse_interval("0.125"), 125);
  EXPECT_EQ(*parse_interval("60"), 60000);
  for (const char* bad : {"", "0", "0.05", "60.001", "61", "99999999999999999999", "-1", "1.",
                          ".5", "1.2345", "1s", " 1", "1e3", "0x10"}) {
    auto r = parse_interval(bad);
    ASSERT_FALSE(r.has_value()) << bad << " was accepted as " << *r;
    EXPECT_NE(r.error().message.find(std::string("--interval '") + bad + "'"), std::string::npos)
        << r.error().message;
  }
}

TEST(CountTest, ZeroMeansUntilInterrupted) {
  EXPECT_EQ(*parse_count("0"), 0u);
  EXPECT_EQ(*parse_count("2"), 2u);
  auto r = parse_count("two");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().message, "--count 'two' must be a number >= 0 (0 = until interrupted)");
}

TEST_F(StatusViewTest, RedrawsClearTheTerminalOrAreSeparatedByABlankLine) {
  Json response{{"ok", true}, {"volumes", Json::array({idle_status()})}};
  std::string block = render_status(response["volumes"]);

  Report once = present_status(response, 0, Watch{});
  EXPECT_EQ(once.table, block);
  EXPECT_EQ(once.json, response);

  Watch terminal{.watching = true, .count = 0, .terminal = true};
  EXPECT_EQ(present_status(response, 0, terminal).table, "\x1b[H\x1b[2J" + block);
  EXPECT_EQ(present_status(response, 5, terminal).table, "\x1b[H\x1b[2J" + block);

  Watch piped{.watching = true, .count = 2, .terminal = false};
  EXPECT_EQ(present_status(response, 0, piped).table, block);
  EXPECT_EQ(present_status(response, 1, piped).table, "\n" + block);
}

TEST(StatusPresentTest, NoVolumesIsAMessage) {
  Invocation inv;
  inv.command = "status";
  Report r = present(inv, Json{{"cmd", "status"}},
                     Json{{"ok", true}, {"volumes", Json::array()}});
  EXPECT_TRUE(r.table.empty());
  ASSERT_EQ(r.messages.size(), 1u);
  EXPECT_EQ(r.messages[0], "no volumes registered");
}

TEST_F(StatusViewTest, RefusedReplicatorsAreShownWithTheCommandToAddThem) {
  Json response = Json::parse(R"({"ok":true,"volumes":[],"pending_replicas":[
      {"id":"AAAA-BBBB","name":"r3","address":"10.0.0.5:40000",
       "last_seen_at":"2026-11-26T01:02:03Z","attempts":4}]})");
  Report r = present_status(response, 0, Watch{});
  EXPECT_EQ(r.table,
            "replicas waiting for authorisation:\n"
            "ID         NAME  FROM            LAST SEEN            ATTEMPTS\n"
            "AAAA-BBBB  r3    10.0.0.5:40000  2026-11-26 01:02:03         4\n");
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_NE(r.warnings[0].find("bkptool replica add ID"), std::string::npos);
}

}  // namespace
}  // namespace bkp::tools
