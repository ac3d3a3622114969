// Path rules (DESIGN.md invariant 7): what a peer names must stay inside its volume. Every
// spelling that could climb out or alias another entry is rejected; ordinary names, including
// ones that merely look suspicious ("..a", ".hidden"), are accepted.
#include "common/path.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <set>
#include <string>

namespace bkp {
namespace {

// "ok", or the error text: a rejection shows its reason in the failure message.
std::string rel(std::string_view p) {
  auto r = validate_rel_path(p);
  if (r) return "ok";
  EXPECT_EQ(r.error().code, EINVAL) << p;
  EXPECT_FALSE(r.error().message.empty()) << p;
  return "rejected: " + r.error().message;
}

std::string vol(std::string_view p) {
  auto r = validate_volume_path(p);
  if (!r) {
    EXPECT_EQ(r.error().code, EINVAL) << p;
    return "rejected";
  }
  EXPECT_EQ(*r, p);
  return "ok";
}

TEST(PathTest, AcceptsOrdinaryRelativePaths) {
  for (std::string_view p : {"", "a", "a/b", "a/b/c.txt", "..a", "a..", "...", ".hidden", "a/.b/c",
                             "with space", "ünïcödé/名前", "a-b_c.d~"}) {
    EXPECT_EQ(rel(p), "ok") << "'" << p << "'";
  }
  EXPECT_EQ(rel(std::string(255, 'x')), "ok");
  EXPECT_EQ(rel(std::string(255, 'x') + "/" + std::string(255, 'y')), "ok");
}

TEST(PathTest, RejectsParentComponents) {
  for (std::string_view p : {"..", "../a", "a/..", "a/../b", "a/b/../../..", "../../etc/passwd"}) {
    EXPECT_NE(rel(p), "ok") << "'" << p << "'";
  }
}

TEST(PathTest, RejectsAbsolutePaths) {
  for (std::string_view p : {"/", "/a", "/etc/passwd", "//a"}) EXPECT_NE(rel(p), "ok") << p;
}

TEST(PathTest, RejectsEmptyAndDotComponents) {
  for (std::string_view p : {"a//b", "a/", "a/b/", ".", "./a", "a/.", "a/./b", "//"}) {
    EXPECT_NE(rel(p), "ok") << "'" << p << "'";
  }
}

TEST(PathTest, RejectsEmbeddedNul) {
  EXPECT_NE(rel(std::string("a\0b", 3)), "ok");
  EXPECT_NE(rel(std::string("a/\0", 3)), "ok");
  EXPECT_NE(rel(std::string("\0", 1)), "ok");
}

TEST(PathTest, ValidatesVolumePaths) {
  for (std::string_view p : {"/srv/app", "/srv/my-app", "/a", "/var/lib/some thing"}) {
    EXPECT_EQ(vol(p), "ok") << p;
  }
  for (std::string_view p :
       {"", "srv/app", "/srv/../app", "/srv/./app", "/srv//app", "/srv/app/", "/..", "/."}) {
    EXPECT_EQ(vol(p), "rejected") << "'" << p << "'";
  }
  EXPECT_EQ(vol(std::string("/srv/a\0b", 8)), "rejected");
}

TEST(PathTest, ValidatesHosts) {
  for (std::string_view h : {"web1", "web-1.example.com", "a_b", "1.2.3.4", "x"}) {
    EXPECT_TRUE(validate_host(h)) << h;
  }
  for (std::string_view h : {"", ".x", "-x", "a/b", "a b", "..", "a\\b"}) {
    EXPECT_FALSE(validate_host(h)) << "'" << h << "'";
  }
  EXPECT_TRUE(validate_host(std::string(253, 'h')));
  EXPECT_FALSE(validate_host(std::string(254, 'h')));
  EXPECT_FALSE(validate_host(std::string("a\0b", 3)));
}

TEST(PathTest, SplitsAndJoins) {
  EXPECT_EQ(parent_of("a/b/c"), "a/b");
  EXPECT_EQ(base_of("a/b/c"), "c");
  EXPECT_EQ(parent_of("c"), "");
  EXPECT_EQ(base_of("c"), "c");
  EXPECT_EQ(join_rel("", "x"), "x");
  EXPECT_EQ(join_rel("a/b", "x"), "a/b/x");
  EXPECT_EQ(join_rel(parent_of("a/b/c"), base_of("a/b/c")), "a/b/c");
}

TEST(PathTest, EscapesLikeSystemd) {
  EXPECT_EQ(escape_path("/srv/my-app"), "srv-my\\x2dapp");
  EXPECT_EQ(escape_path("/srv/app"), "srv-app");
  EXPECT_EQ(escape_path("/a"), "a");
}

TEST(PathTest, EscapeIsInjectiveAndYieldsOneComponent) {
  std::set<std::string> seen;
  for (std::string_view p :
       {"/a/b", "/a-b", "/a\\x2db", "/a\\b", "/a_b", "/a.b", "/a b", "/a/b/c", "/a/b-c", "/a-b/c",
        "/ab", "/.a", "/a/.b", "/srv/my-app", "/srv/my/app", "/srv-my/app", "/ü", "/x:y"}) {
    std::string e = escape_path(p);
    EXPECT_TRUE(seen.insert(e).second) << p << " escapes to '" << e << "', like another path";
    EXPECT_EQ(e.find('/'), std::string::npos) << p << " -> " << e;
    EXPECT_FALSE(e.empty()) << p;
    EXPECT_NE(e, ".") << p;
    EXPECT_NE(e, "..") << p;
    EXPECT_TRUE(validate_rel_path(e)) << p << " -> " << e << " is not a single valid name";
  }
}

}  // namespace
}  // namespace bkp
