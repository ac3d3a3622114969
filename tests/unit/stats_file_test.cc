// StatsFile (common/stats_file.h): the totals since install add up across runs, a file that is
// not a stats file starts them again, and what is written is always a whole JSON document.
#include "common/stats_file.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "tests/testutil/files.h"
#include "tests/testutil/temp_dir.h"

namespace bkp {
namespace {

using json = nlohmann::json;

json read_json(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in, nullptr, false);
}

TEST(StatsFileTest, SinceInstallAddsEachRunToThePreviousOnes) {
  testutil::TempDir dir;
  const std::string path = dir.sub("stats.json");
  {
    StatsFile first(path, "testd");
    ASSERT_TRUE(first.write(json{{"bytes", 100}, {"runs", {{"written", 2}}}}, json{{"up", true}}));
    ASSERT_TRUE(first.write(json{{"bytes", 150}, {"runs", {{"written", 3}}}}, json::object()));
  }
  json doc = read_json(path);
  ASSERT_TRUE(doc.is_object());
  EXPECT_EQ(doc["daemon"], "testd");
  EXPECT_EQ(doc["since_install"]["bytes"], 150);  // the same run's writes do not add up
  StatsFile second(path, "testd");
  ASSERT_TRUE(second.write(json{{"bytes", 10}, {"runs", {{"written", 1}, {"failed", 1}}}},
                           json::object()));
  doc = read_json(path);
  EXPECT_EQ(doc["since_start"]["bytes"], 10);
  EXPECT_EQ(doc["since_install"]["bytes"], 160);
  EXPECT_EQ(doc["since_install"]["runs"]["written"], 4);
  EXPECT_EQ(doc["since_install"]["runs"]["failed"], 1);
  EXPECT_TRUE(doc["started_at"].is_string());
  EXPECT_TRUE(doc["uptime_seconds"].is_number());
}

TEST(StatsFileTest, AFileThatIsNotAStatsFileStartsTheTotalsAgain) {
  testutil::TempDir dir;
  const std::string path = dir.sub("stats.json");
  testutil::write_file(path, "{ not json");
  StatsFile stats(path, "testd");
  ASSERT_TRUE(stats.write(json{{"bytes", 7}}, json::object()));
  EXPECT_EQ(read_json(path)["since_install"]["bytes"], 7);
}

}  // namespace
}  // namespace bkp
