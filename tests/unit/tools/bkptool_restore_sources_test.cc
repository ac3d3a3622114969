// Restore sources (tools/restore_sources.h): --from entries get the identity they name, the one
// remembered for their address, or backupd's; the remembered file keeps one entry per name and
// ignores what it cannot read.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "tests/testutil/temp_dir.h"
#include "tools/restore_sources.h"

namespace bkp::tools {
namespace {

const std::string kId1 = "AAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GGGG-HHHH-IIII-JJJJ-KKKK-LLLL-MMMM";
const std::string kId2 = "MMMM-LLLL-KKKK-JJJJ-IIII-HHHH-GGGG-FFFF-EEEE-DDDD-CCCC-BBBB-AAAA";

ServerAddress backupd() {
  auto s = parse_server("127.0.0.1:7700");
  EXPECT_TRUE(s);
  s->server_id = kId2;
  s->server_id_source = "--server-id";
  s->identity_path = "/home/op/.config/bkptool/identity.pem";
  return *s;
}

TEST(RestoreSourcesTest, FromEntriesTakeTheirIdentityFromTheEntryTheMemoryOrBackupd) {
  std::vector<KnownSource> known{{"r1", "127.0.0.1:7801", kId1}};
  auto from = parse_from("127.0.0.1:7801," + kId2 + "@127.0.0.1:7802,127.0.0.1:7700,/run/b.sock",
                         backupd(), known);
  ASSERT_TRUE(from) << from.error().message;
  ASSERT_EQ(from->size(), 4u);
  EXPECT_EQ((*from)[0].server_id, kId1);
  EXPECT_EQ((*from)[0].role, "replica r1");
  EXPECT_EQ((*from)[1].server_id, kId2);
  EXPECT_EQ((*from)[1].where.port, 7802);
  EXPECT_EQ((*from)[1].role, "source");
  EXPECT_EQ((*from)[2].role, "backupd");
  EXPECT_EQ((*from)[2].server_id, kId2);
  EXPECT_EQ((*from)[3].transport, Transport::kUnix);
  for (const auto& a : *from) EXPECT_EQ(a.identity_path, backupd().identity_path);
}

TEST(RestoreSourcesTest, FromRefusesUnknownIdentitiesAndBadEntries) {
  for (const std::string bad : {"127.0.0.1:7803", "127.0.0.1:7801,", "nope@127.0.0.1:7801",
                                "127.0.0.1", ""}) {
    auto from = parse_from(bad, backupd(), {});
    ASSERT_FALSE(from) << bad;
    EXPECT_EQ(from.error().exit, Exit::kUsage) << bad;
    EXPECT_NE(from.error().message.find("--from"), std::string::npos) << from.error().message;
  }
  auto unknown = parse_from("127.0.0.1:7803", backupd(), {});
  ASSERT_FALSE(unknown);
  EXPECT_NE(unknown.error().message.find("write it as ID@127.0.0.1:7803"), std::string::npos)
      << unknown.error().message;
}

TEST(RestoreSourcesTest, TheRememberedFileKeepsOneEntryPerNameAndSkipsWhatItCannotRead) {
  testutil::TempDir dir("bkp-sources");
  const std::string file = remembered_sources_path(dir.sub("bkptool/identity.pem"));
  EXPECT_EQ(file, dir.sub("bkptool/sources.json"));
  EXPECT_TRUE(load_remembered(file).empty()) << "no file: nothing remembered";

  ASSERT_TRUE(remember(file, {{"r1", "127.0.0.1:7801", kId1}, {"r2", "127.0.0.1:7802", kId2}}));
  ASSERT_TRUE(remember(file, {{"r1", "[::1]:7811", kId1}}));
  auto known = load_remembered(file);
  ASSERT_EQ(known.size(), 2u);
  EXPECT_EQ(known[0], (KnownSource{"r1", "[::1]:7811", kId1})) << "replaced by name";
  EXPECT_EQ(known[1], (KnownSource{"r2", "127.0.0.1:7802", kId2}));

  std::ofstream(file) << R"({"sources": [{"name": "r3", "address": "x", "id": "y"},
                                         {"name": "r4", "address": "127.0.0.1:1", "id": ")" +
                             kId1 + R"("}]})";
  known = load_remembered(file);
  ASSERT_EQ(known.size(), 1u) << "a malformed entry is skipped";
  EXPECT_EQ(known[0].name, "r4");
  std::ofstream(file) << "not json";
  EXPECT_TRUE(load_remembered(file).empty());
}

TEST(RestoreSourcesTest, AnAnswerNamesOnlyWellFormedSources) {
  Json good{{"name", "r1"}, {"address", "127.0.0.1:9"}, {"id", kId1}};
  Json no_id{{"name", "r2"}, {"address", "127.0.0.1:9"}};
  Json no_name{{"name", ""}, {"address", "127.0.0.1:9"}, {"id", kId1}};
  Json header{{"ok", true}, {"sources", Json::array({good, no_id, no_name})}};
  auto sources = sources_from_answer(header);
  ASSERT_EQ(sources.size(), 1u);
  EXPECT_EQ(sources[0].name, "r1");
  ServerAddress a = source_address(sources[0], backupd());
  EXPECT_EQ(a.transport, Transport::kTcp);
  EXPECT_EQ(a.where.port, 9);
  EXPECT_EQ(a.server_id, kId1);
  EXPECT_EQ(a.role, "replica r1");
  EXPECT_TRUE(sources_from_answer(Json{{"ok", true}}).empty());
}

}  // namespace
}  // namespace bkp::tools
