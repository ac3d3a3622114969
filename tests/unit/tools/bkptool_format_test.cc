// bkptool's human output: sizes, durations, periods and dates read the way the README shows
// them, and tables line up (by characters, not bytes) without trailing spaces, including the
// views built from the protocol's VOLUME, RUN and SNAPSHOT objects.
#include <gtest/gtest.h>

#include <cstdlib>
#include <ctime>
#include <string>

#include "tools/commands.h"
#include "tools/format.h"
#include "tools/views.h"

namespace bkp::tools {
namespace {

// Runs the test body in a fixed zone and restores the previous TZ after.
class LocalZone {
 public:
  explicit LocalZone(const char* tz) {
    if (const char* old = std::getenv("TZ")) {
      old_ = old;
      had_ = true;
    }
    setenv("TZ", tz, 1);
    tzset();
  }
  ~LocalZone() {
    if (had_) {
      setenv("TZ", old_.c_str(), 1);
    } else {
      unsetenv("TZ");
    }
    tzset();
  }

 private:
  std::string old_;
  bool had_ = false;
};

TEST(HumanSizeTest, BinaryUnitsWithOneDecimal) {
  EXPECT_EQ(human_size(0), "0 B");
  EXPECT_EQ(human_size(1023), "1023 B");
  EXPECT_EQ(human_size(1024), "1.0 KiB");
  EXPECT_EQ(human_size(1536), "1.5 KiB");
  EXPECT_EQ(human_size(12897485), "12.3 MiB");
  EXPECT_EQ(human_size(uint64_t{4} << 30), "4.0 GiB");
  EXPECT_EQ(human_size((uint64_t{1} << 20) - 1), "1.0 MiB");  // not "1024.0 KiB"
  EXPECT_EQ(human_size(UINT64_MAX), "16.0 EiB");
}

TEST(HumanDurationTest, PicksTheUnitAPersonWouldSay) {
  EXPECT_EQ(human_duration_ms(0), "0 ms");
  EXPECT_EQ(human_duration_ms(350), "350 ms");
  EXPECT_EQ(human_duration_ms(1000), "1.0 s");
  EXPECT_EQ(human_duration_ms(12345), "12.3 s");
  EXPECT_EQ(human_duration_ms(60000), "1 min");
  EXPECT_EQ(human_duration_ms(245000), "4 min 5 s");
  EXPECT_EQ(human_duration_ms(7380000), "2 h 3 min");
  EXPECT_EQ(human_duration_ms(93600000), "1 d 2 h");
}

TEST(HumanPeriodTest, LargestWholeUnit) {
  EXPECT_EQ(human_period(30), "30 s");
  EXPECT_EQ(human_period(90), "90 s");
  EXPECT_EQ(human_period(300), "5 min");
  EXPECT_EQ(human_period(9000), "150 min");
  EXPECT_EQ(human_period(7200), "2 h");
  EXPECT_EQ(human_period(86400), "1 d");
}

TEST(CountedTest, SingularOnlyForOne) {
  EXPECT_EQ(counted(0, "file", "files"), "0 files");
  EXPECT_EQ(counted(1, "file", "files"), "1 file");
  EXPECT_EQ(counted(2, "directory", "directories"), "2 directories");
}

TEST(LocalTimeTest, UtcBecomesLocal) {
  {
    LocalZone utc("UTC0");
    EXPECT_EQ(local_time("2026-11-26T01:02:03Z"), "2026-11-26 01:02:03");
    EXPECT_EQ(local_time("2026-11-26T01:02:03.123Z"), "2026-11-26 01:02:03");
  }
  {
    LocalZone berlin("CET-1CEST,M3.5.0,M10.5.0/3");
    EXPECT_EQ(local_time("2026-11-26T23:30:00Z"), "2026-11-27 00:30:00");
    EXPECT_EQ(local_time("2026-07-01T12:00:00Z"), "2026-07-01 14:00:00");
  }
}

TEST(LocalTimeTest, AnythingElseIsShownAsIs) {
  for (const char* text :
       {"", "yesterday", "2026-11-26", "2026-11-26T01:02:03", "2026-13-01T00:00:00Z",
        "2026-11-26T01:02:03.Z", "2026-11-26T01:02:03Zjunk"}) {
    EXPECT_EQ(local_time(text), text);
  }
}

TEST(TableTest, AlignsColumnsWithoutTrailingSpaces) {
  Table t({"NAME", "SIZE", "NOTE"}, {Table::Align::kLeft, Table::Align::kRight});
  t.add({"a", "1.0 KiB", "x"});
  t.add({"longer-name", "12 B"});
  EXPECT_EQ(t.render(),
            "NAME            SIZE  NOTE\n"
            "a            1.0 KiB  x\n"
            "longer-name     12 B\n");
}

TEST(TableTest, WidthCountsCharactersNotBytes) {
  Table t({"PATH", "N"});
  t.add({"/srv/café", "1"});
  t.add({"/srv/cafe", "2"});
  EXPECT_EQ(t.render(),
            "PATH       N\n"
            "/srv/café  1\n"
            "/srv/cafe  2\n");
}

Json run_json(const char* status, Json snapshot, uint64_t bytes, Json error) {
  return Json{{"id", 7},
              {"started_at", "2026-11-26T01:02:03Z"},
              {"ended_at", "2026-11-26T01:02:05Z"},
              {"status", status},
              {"snapshot", snapshot},
              {"snapshot_bytes", bytes},
              {"duration_ms", 2100},
              {"changed_bytes", 4096},
              {"changed_files", 1},
              {"error", error}};
}

TEST(ViewsTest, HistoryShowsFailuresAndRotatedRuns) {
  LocalZone utc("UTC0");
  Json runs = Json::array({run_json("written", "20261126T010203.000Z", 12897485, nullptr),
                           run_json("failed", nullptr, 0, "node unreachable: refused")});
  EXPECT_EQ(
      render_runs(runs),
      "STARTED              STATUS   SNAPSHOT                  SIZE  DURATION          CHANGED  "
      "ERROR/WARNING\n"
      "2026-11-26 01:02:03  written  20261126T010203.000Z  12.3 MiB     2.1 s  1 file, 4.0 KiB\n"
      "2026-11-26 01:02:03  failed   -                            -     2.1 s  1 file, 4.0 KiB  "
      "node unreachable: refused\n");
}

TEST(ViewsTest, AWrittenRunWithWarningsSaysSo) {
  LocalZone utc("UTC0");
  Json run = run_json("written", "20261126T010203.000Z", 1024, nullptr);
  run["warnings"] = "1 socket not archived (no archive format holds one): run/app.sock";
  std::string table = render_runs(Json::array({run}));
  EXPECT_NE(table.find("written with warnings"), std::string::npos) << table;
  EXPECT_NE(table.find("run/app.sock"), std::string::npos) << table;
}

TEST(ViewsTest, ListShowsLagAndLastError) {
  LocalZone utc("UTC0");
  Json volumes = Json::array({Json{{"host", "web1"},
                                   {"address", "10.0.0.7"},
                                   {"port", 7701},
                                   {"path", "/srv/app"},
                                   {"every_seconds", 300},
                                   {"connected", false},
                                   {"last_error", "connect: refused"},
                                   {"lag_ops", 12},
                                   {"lag_bytes", 2048},
                                   {"lag_seconds", 4.2},
                                   {"last_run", nullptr},
                                   {"next_run", "2026-11-26T01:07:03Z"},
                                   {"copies", Json::array({Json{{"name", "mirror"},
                                                                {"state", "missing"}},
                                                           Json{{"name", "r1"},
                                                                {"state", "current"}}})},
                                   {"copies_wanted", 2},
                                   {"copies_current", 1},
                                   {"under_replicated", true}}});
  EXPECT_EQ(render_volumes(volumes),
            "HOST  NODE           PATH      EVERY  LINK  LAST RUN  STATUS  NEXT RUN             LAG"
            "                      COPIES\n"
            "web1  10.0.0.7:7701  /srv/app  5 min  down  never     -       2026-11-26 01:07:03  "
            "4.2 s (12 ops, 2.0 KiB)  1/2\n"
            "\n"
            "web1:/srv/app: last error: connect: refused\n"
            "web1:/srv/app: copies 1 of 2 current: mirror missing, r1 current; UNDER-REPLICATED\n");
  volumes[0].erase("copies_wanted");  // an older server
  EXPECT_NE(render_volumes(volumes).find("2.0 KiB)  -\n"), std::string::npos);
  // Another server's volume (several servers on one catalog): its link is not known here.
  volumes[0]["connected"] = nullptr;
  volumes[0]["served_by"] = "backup-2";
  EXPECT_NE(render_volumes(volumes).find("web1:/srv/app: served by backupd backup-2\n"),
            std::string::npos) << render_volumes(volumes);
  volumes[0]["served_by"] = "";
  EXPECT_NE(render_volumes(volumes).find("web1:/srv/app: no backupd serves it right now"),
            std::string::npos) << render_volumes(volumes);
}

TEST(ViewsTest, MissingAndOddFieldsNeverThrow) {
  Json odd =
      Json::array({Json{{"host", 5}, {"every_seconds", "often"}, {"last_run", "?"}}, Json(3)});
  EXPECT_NO_THROW(render_volumes(odd));
  EXPECT_NO_THROW(render_runs(Json::array({Json::object(), Json{{"duration_ms", -1}}})));
  EXPECT_NO_THROW(render_snapshots(Json::array({Json{{"bytes", "many"}}})));
}

TEST(PresentTest, RegisterNamesTheVolumeAfterItsNodeAndThePeriod) {
  Invocation inv;
  inv.command = "register";
  Json request = {{"cmd", "register"},
                  {"address", "127.0.0.1"},
                  {"port", 7701},
                  {"path", "/srv/app"},
                  {"every_seconds", 300}};
  Json volume = {{"host", "web1"}, {"address", "127.0.0.1"}, {"port", 7701},
                 {"path", "/srv/app"}, {"every_seconds", 300}};
  Report r = present(inv, request, Json{{"ok", true}, {"volume", volume}});
  ASSERT_EQ(r.messages.size(), 1u);
  EXPECT_EQ(r.messages[0],
            "registered web1:/srv/app (node at 127.0.0.1:7701), every 5 min; baseline started");
  EXPECT_TRUE(r.table.empty());
  EXPECT_EQ(r.json["ok"], true);

  // The node identity pinned now is shown, with how to check it.
  volume["node_id"] = "AAAA-BBBB";
  r = present(inv, request, Json{{"ok", true}, {"volume", volume}});
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[1], "node identity AAAA-BBBB (pinned now: check it against `backupfs "
                           "--show-id` on the node)");
}

TEST(PresentTest, MessagesNameTheVolumeTheServerResolved) {
  Invocation inv;
  inv.command = "unregister";
  Json request = {{"cmd", "unregister"}, {"host", "127.0.0.1"}, {"path", "/srv/app"}};
  Report r = present(inv, request, Json{{"ok", true}, {"host", "web1"}, {"purged", false}});
  ASSERT_EQ(r.messages.size(), 1u);
  EXPECT_EQ(r.messages[0], "unregistered web1:/srv/app; snapshots and history kept");
  inv.command = "history";
  r = present(inv, request, Json{{"ok", true}, {"host", "web1"}, {"runs", Json::array()}});
  ASSERT_EQ(r.messages.size(), 1u);
  EXPECT_EQ(r.messages[0], "no runs yet for web1:/srv/app");
}

// A purge says what went where: backupd's directory, each replica's copy, and which replicas
// get it when they return; a replica that could not is a warning, not a failure (it is asked
// again).
TEST(PresentTest, UnregisterPurgeSaysWhereTheCopiesWent) {
  Invocation inv;
  inv.command = "unregister";
  Json request = {{"cmd", "unregister"}, {"host", "web1"}, {"path", "/srv/app"}, {"purge", true}};
  Json replicas = Json::array();
  replicas.push_back({{"name", "r1"}, {"state", "done"}, {"error", nullptr}});
  replicas.push_back({{"name", "r2"}, {"state", "offline"}, {"error", nullptr}});
  replicas.push_back({{"name", "r3"}, {"state", "waiting"}, {"error", nullptr}});
  replicas.push_back({{"name", "r4"}, {"state", "failed"}, {"error", "delete x: Permission denied"}});
  Report r = present(inv, request,
                     Json{{"ok", true}, {"host", "web1"}, {"purged", true},
                          {"deleted", "/var/lib/backupd/volumes/web1/srv-app"},
                          {"replicas", replicas}});
  EXPECT_EQ(r.messages, (std::vector<std::string>{
                            "unregistered web1:/srv/app; deleted its mirror, snapshots and history "
                            "on backupd (/var/lib/backupd/volumes/web1/srv-app)",
                            "replica r1: copy deleted",
                            "replica r2: offline; it deletes its copy when it reconnects",
                            "replica r3: busy; it deletes its copy after its current batch"}));
  EXPECT_EQ(r.warnings, (std::vector<std::string>{
                            "replica r4: could not: delete x: Permission denied; backupd asks "
                            "again when it reconnects"}));

  request["purge"] = false;
  replicas = Json::array({replicas[0]});
  r = present(inv, request,
              Json{{"ok", true}, {"host", "web1"}, {"purged", false}, {"deleted", nullptr},
                   {"replicas", replicas}});
  EXPECT_EQ(r.messages, (std::vector<std::string>{
                            "unregistered web1:/srv/app; snapshots and history kept",
                            "replica r1: copy closed (kept on disk)"}));
}

TEST(PresentTest, EmptyListsSayNothingIsThere) {
  Invocation inv;
  inv.command = "list";
  Report r = present(inv, Json{{"cmd", "list"}}, Json{{"ok", true}, {"volumes", Json::array()}});
  EXPECT_TRUE(r.table.empty());
  ASSERT_EQ(r.messages.size(), 1u);
  EXPECT_EQ(r.messages[0], "no volumes registered");
}

}  // namespace
}  // namespace bkp::tools
