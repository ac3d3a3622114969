// The --version text every binary prints (common/version.h): program, version, and the commit
// when the build knew one.
#include "common/version.h"

#include <gtest/gtest.h>

#include <regex>

namespace bkp {
namespace {

TEST(VersionTest, NamesTheCommitWhenKnown) {
  EXPECT_EQ(format_version("bkptool", "0.1.0", "abc1234"), "bkptool 0.1.0 (git abc1234)");
  EXPECT_EQ(format_version("backupd", "0.1.0", ""), "backupd 0.1.0");
}

TEST(VersionTest, ThisBuildsText) {
  std::string text = version_text("replicator");
  std::regex shape(R"(replicator \d+\.\d+\.\d+( \(git [0-9a-f]{7,}\))?)");
  EXPECT_TRUE(std::regex_match(text, shape)) << text;
}

}  // namespace
}  // namespace bkp
