// bkptool's argument checks and exit codes: every bad value is refused with a message naming
// it (so the user sees what to fix), every good spelling of a period means what users expect,
// and every error code of docs/PROTOCOL.md maps to the documented exit code.
#include <gtest/gtest.h>

#include <string>

#include "tools/args.h"
#include "tools/commands.h"
#include "tools/failure.h"

namespace bkp::tools {
namespace {

int64_t period(std::string_view text) {
  auto r = parse_period(text);
  EXPECT_TRUE(r.has_value()) << text << ": " << (r ? "" : r.error().message);
  return r ? *r : -1;
}

std::string period_error(std::string_view text) {
  auto r = parse_period(text);
  EXPECT_FALSE(r.has_value()) << text << " was accepted as " << (r ? *r : 0);
  return r ? "" : r.error().message;
}

TEST(PeriodTest, BareNumberIsMinutes) {
  EXPECT_EQ(period("1"), 60);
  EXPECT_EQ(period("5"), 300);
  EXPECT_EQ(period("1440"), 86400);
}

TEST(PeriodTest, ExplicitUnits) {
  EXPECT_EQ(period("30s"), 30);
  EXPECT_EQ(period("5m"), 300);
  EXPECT_EQ(period("2h"), 7200);
  EXPECT_EQ(period("1d"), 86400);
  EXPECT_EQ(period("365d"), kMaxPeriodSeconds);
}

TEST(PeriodTest, RejectsZeroAndNegativesNamingTheValue) {
  for (const char* bad : {"0", "0s", "0m", "-5", "-5m", "-0"}) {
    std::string message = period_error(bad);
    EXPECT_NE(message.find(std::string("'") + bad + "'"), std::string::npos) << message;
    EXPECT_NE(message.find("positive"), std::string::npos) << message;
  }
}

TEST(PeriodTest, RejectsJunk) {
  for (const char* bad :
       {"abc", "5x", "m", "1.5h", "5 m", " 5", "5 ", "+5", "5mm", "0x10", "5M", "1e3"}) {
    std::string message = period_error(bad);
    EXPECT_NE(message.find(std::string("'") + bad + "'"), std::string::npos) << message;
    EXPECT_NE(message.find("30s, 5m, 2h, 1d"), std::string::npos) << message;
  }
  EXPECT_NE(period_error("").find("empty"), std::string::npos);
}

TEST(PeriodTest, RejectsOverflowAndAbsurdPeriods) {
  for (const char* bad :
       {"525601", "366d", "8785h", "99999999999999999999999", "18446744073709551615",
        "18446744073709551616s", "9223372036854775807d"}) {
    std::string message = period_error(bad);
    EXPECT_NE(message.find("at most 365 days"), std::string::npos) << message;
  }
}

TEST(PortTest, AcceptsOnlyOneTo65535) {
  EXPECT_EQ(*parse_port("1"), 1);
  EXPECT_EQ(*parse_port("7700"), 7700);
  EXPECT_EQ(*parse_port("65535"), 65535);
  for (const char* bad : {"0", "65536", "-1", "x", "", "77 00", "99999999999999999999"}) {
    auto r = parse_port(bad);
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().message,
              std::string("port '") + bad + "' must be a number from 1 to 65535");
  }
}

TEST(LimitTest, ZeroMeansAll) {
  EXPECT_EQ(*parse_limit("0"), 0u);
  EXPECT_EQ(*parse_limit("25"), 25u);
  EXPECT_FALSE(parse_limit("-1").has_value());
  EXPECT_FALSE(parse_limit("ten").has_value());
}

TEST(VolumeArgsTest, HostAndPathFollowTheServerRules) {
  EXPECT_EQ(*check_host("web1.example.com"), "web1.example.com");
  EXPECT_FALSE(check_host("").has_value());
  EXPECT_FALSE(check_host("-web").has_value());
  EXPECT_FALSE(check_host("a b").has_value());
  EXPECT_EQ(*check_volume_path("/srv/app"), "/srv/app");
  EXPECT_FALSE(check_volume_path("srv/app").has_value());
  EXPECT_FALSE(check_volume_path("/srv/../etc").has_value());
  EXPECT_FALSE(check_volume_path("/srv/app/").has_value());
  EXPECT_FALSE(check_volume_path("/").has_value());
}

TEST(ExitCodeTest, EveryProtocolCodeHasItsDocumentedExit) {
  // The table in docs/PROTOCOL.md, "Control".
  EXPECT_EQ(exit_status(exit_for_code("bad_request")), 2);
  EXPECT_EQ(exit_status(exit_for_code("unknown_volume")), 4);
  EXPECT_EQ(exit_status(exit_for_code("duplicate")), 5);
  EXPECT_EQ(exit_status(exit_for_code("node_unreachable")), 6);
  EXPECT_EQ(exit_status(exit_for_code("wrong_path")), 6);
  EXPECT_EQ(exit_status(exit_for_code("no_snapshot")), 7);
  EXPECT_EQ(exit_status(exit_for_code("internal")), 1);
  EXPECT_EQ(exit_status(exit_for_code("unknown_peer")), 4);
  EXPECT_EQ(exit_status(Exit::kWrongIdentity), 8);
  EXPECT_EQ(exit_status(Exit::kUnreachable), 3);
  EXPECT_EQ(exit_status(Exit::kConfig), 78);
}

TEST(ExitCodeTest, HelpDocumentsEveryExitCode) {
  std::string help = help_footer();
  for (Exit e : {Exit::kOk, Exit::kFailure, Exit::kUsage, Exit::kUnreachable, Exit::kUnknownVolume,
                 Exit::kDuplicate, Exit::kNodeUnreachable, Exit::kNoSnapshot, Exit::kWrongIdentity,
                 Exit::kConfig}) {
    std::string row = "\n  " + std::to_string(exit_status(e)) + " ";
    EXPECT_NE(help.find(row), std::string::npos) << "exit " << exit_status(e) << " undocumented";
  }
}

TEST(ExitCodeTest, UnknownCodesNeverLookLikeSuccess) {
  EXPECT_EQ(exit_for_code("something_new"), Exit::kFailure);
  EXPECT_EQ(exit_for_code(""), Exit::kFailure);
}

Invocation reg(std::string every, std::string port = "7701", std::string path = "/srv/app") {
  Invocation inv;
  inv.command = "register";
  inv.host = "127.0.0.1";
  inv.port = std::move(port);
  inv.path = std::move(path);
  inv.every = std::move(every);
  return inv;
}

TEST(RequestTest, RegisterCarriesSeconds) {
  auto request = make_request(reg("5"));
  ASSERT_TRUE(request.has_value()) << request.error().message;
  EXPECT_EQ(
      request->dump(),
      R"({"cmd":"register","address":"127.0.0.1","path":"/srv/app","port":7701,"every_seconds":300})");
}

TEST(RequestTest, BadValuesAreUsageErrorsBeforeConnecting) {
  for (const Invocation& inv : {reg("0"), reg("-3"), reg("soon"), reg("5", "0"), reg("5", "http"),
                                reg("5", "7701", "relative/path")}) {
    auto request = make_request(inv);
    ASSERT_FALSE(request.has_value()) << inv.every << " " << inv.port << " " << inv.path;
    EXPECT_EQ(request.error().exit, Exit::kUsage);
    EXPECT_EQ(request.error().code, "usage");
  }
}

TEST(RequestTest, OtherCommands) {
  Invocation inv;
  inv.command = "list";
  EXPECT_EQ(make_request(inv)->dump(), R"({"cmd":"list"})");
  inv.command = "unregister";
  inv.host = "web1";
  inv.path = "/srv/app";
  inv.purge = true;
  EXPECT_EQ(make_request(inv)->dump(),
            R"({"cmd":"unregister","host":"web1","path":"/srv/app","purge":true})");
  inv.command = "history";
  inv.limit = "3";
  EXPECT_EQ(make_request(inv)->dump(),
            R"({"cmd":"history","host":"web1","path":"/srv/app","limit":3})");
  inv.command = "restore";
  inv.to = "/tmp/x";
  EXPECT_EQ(make_request(inv)->dump(),
            R"({"cmd":"restore","host":"web1","path":"/srv/app","snapshot":"latest"})");
}

TEST(RequestTest, PeerCommandsCarryTheCanonicalId) {
  const std::string id = "AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA";
  Invocation inv;
  inv.command = "replica_add";
  inv.id = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
  inv.name = "r1";
  EXPECT_EQ(make_request(inv)->dump(), R"({"cmd":"replica_add","id":")" + id + R"(","name":"r1"})");
  inv.command = "operator_remove";
  EXPECT_EQ(make_request(inv)->dump(), R"({"cmd":"operator_remove","id":")" + id + R"("})");
  inv.command = "replica_list";
  EXPECT_EQ(make_request(inv)->dump(), R"({"cmd":"replica_list"})");
  for (auto [bad_id, bad_name] : {std::pair{"AAAA", ""}, std::pair{"", ""},
                                  std::pair{id.c_str(), "a\tb"}}) {
    inv.command = "operator_add";
    inv.id = bad_id;
    inv.name = bad_name;
    auto r = make_request(inv);
    ASSERT_FALSE(r.has_value()) << bad_id << " " << bad_name;
    EXPECT_EQ(r.error().exit, Exit::kUsage);
  }
}

}  // namespace
}  // namespace bkp::tools
