// Where bkptool looks for backupd: the most explicit source wins, a broken config file is
// reported with its name and key (exit 78) unless a more explicit source made it irrelevant.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tools/settings.h"

namespace bkp::tools {
namespace {

class SettingsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/bkptool-settings-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string write_config(const std::string& name, const std::string& text) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }

  std::string dir_;
};

TEST_F(SettingsTest, ExplicitSourcesWinInOrder) {
  std::string file = write_config("a.toml", "server = \"10.0.0.3:7700\"\n");
  Environment env{"10.0.0.2:7702", nullptr, nullptr};
  auto flag = resolve_server("10.0.0.1:7701", env, {file});
  ASSERT_TRUE(flag.has_value());
  EXPECT_EQ(flag->text, "10.0.0.1:7701");
  EXPECT_EQ(flag->source, "--server");
  auto from_env = resolve_server("", env, {file});
  EXPECT_EQ(from_env->where.port, 7702);
  EXPECT_EQ(from_env->source, "BKP_SERVER");
  auto from_file = resolve_server("", Environment{}, {dir_ + "/missing.toml", file});
  EXPECT_EQ(from_file->where.host, "10.0.0.3");
  EXPECT_EQ(from_file->source, file);
  auto fallback = resolve_server("", Environment{}, {dir_ + "/missing.toml"});
  EXPECT_EQ(fallback->text, "/run/backupd/control.sock");
  EXPECT_EQ(fallback->transport, Transport::kUnix);
}

const std::string kId = "AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA";
const std::string kOtherId = "BBBB-BBBB-BBBB-BBBB-BBBB-BBBB-BBBB-BBBB-BBBB-BBBB-BBBB-BBBB-BBBB";

TEST_F(SettingsTest, APathIsAControlSocketAndAnAddressIsTcp) {
  auto path = resolve_server("/tmp/x/control.sock", Environment{}, {});
  ASSERT_TRUE(path.has_value());
  EXPECT_EQ(path->transport, Transport::kUnix);
  EXPECT_EQ(path->socket_path, "/tmp/x/control.sock");
  auto relative = resolve_server("unix:control.sock", Environment{}, {});
  EXPECT_EQ(relative->socket_path, "control.sock");
  auto tcp = resolve_server("10.0.0.1:7700", Environment{}, {});
  EXPECT_EQ(tcp->transport, Transport::kTcp);
  EXPECT_EQ(tcp->where.port, 7700);
  EXPECT_EQ(resolve_server("unix:", Environment{}, {}).error().exit, Exit::kUsage);
}

TEST_F(SettingsTest, ServerIdFromFlagEnvOrTheFileThatNamedTheServer) {
  std::string file = write_config("a.toml", "server = \"10.0.0.3:7700\"\nserver_id = \"" +
                                                kId + "\"\n");
  auto from_file = resolve_server("", Environment{}, {file});
  ASSERT_TRUE(from_file.has_value()) << from_file.error().message;
  EXPECT_EQ(from_file->server_id, kId);
  EXPECT_EQ(from_file->server_id_source, file);
  // An address given elsewhere does not inherit the file's pin.
  EXPECT_EQ(resolve_server("10.0.0.9:7700", Environment{}, {file})->server_id, "");
  Environment env{nullptr, nullptr, nullptr, kOtherId.c_str()};
  EXPECT_EQ(resolve_server("", env, {file})->server_id, kOtherId);
  auto flag = resolve_server("", env, {file}, kId.substr(0, 4) + kId.substr(5));  // no dashes
  EXPECT_EQ(flag->server_id, kId);
  EXPECT_EQ(flag->server_id_source, "--server-id");
  auto bad = resolve_server("", Environment{}, {}, "AAAA");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().exit, Exit::kUsage);
  EXPECT_NE(bad.error().message.find("--server-id"), std::string::npos);
}

TEST_F(SettingsTest, IdentityFileFlagThenXdgThenHome) {
  EXPECT_EQ(*identity_path("/k.pem", Environment{}), "/k.pem");
  EXPECT_EQ(*identity_path("", Environment{nullptr, "/xdg", "/home/u"}),
            "/xdg/bkptool/identity.pem");
  EXPECT_EQ(*identity_path("", Environment{nullptr, nullptr, "/home/u"}),
            "/home/u/.config/bkptool/identity.pem");
  EXPECT_EQ(identity_path("", Environment{}).error().exit, Exit::kUsage);
}

TEST_F(SettingsTest, BadExplicitAddressIsAUsageError) {
  auto r = resolve_server("nonsense", Environment{}, {});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().exit, Exit::kUsage);
  EXPECT_NE(r.error().message.find("--server"), std::string::npos);
  auto e = resolve_server("", Environment{"host:0", nullptr, nullptr}, {});
  ASSERT_FALSE(e.has_value());
  EXPECT_NE(e.error().message.find("BKP_SERVER"), std::string::npos);
}

TEST_F(SettingsTest, BadConfigFileExits78NamingFileAndKey) {
  struct Case {
    const char* text;
    const char* expect;
  };
  for (const Case& c :
       {Case{"sever = \"a:1\"\n", "unknown key 'sever'"},
        Case{"server = 7700\n", "key 'server' must be a string"},
        Case{"server = \"nohost\"\n", "key 'server': address 'nohost'"},
        Case{"server = \"a:99999\"\n", "key 'server'"}, Case{"server = \"unterminated\n", ":1:"},
        Case{"server = \"a:1\"\nserver_id = \"XYZ\"\n", "key 'server_id'"}}) {
    std::string file = write_config("bad.toml", c.text);
    auto r = resolve_server("", Environment{}, {file});
    ASSERT_FALSE(r.has_value()) << c.text;
    EXPECT_EQ(exit_status(r.error().exit), 78);
    EXPECT_EQ(r.error().code, "config");
    EXPECT_NE(r.error().message.find(file), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find(c.expect), std::string::npos) << r.error().message;
  }
}

TEST_F(SettingsTest, BrokenConfigIsIgnoredWhenAnAddressWasGiven) {
  std::string file = write_config("bad.toml", "garbage garbage\n");
  EXPECT_TRUE(resolve_server("127.0.0.1:1", Environment{}, {file}).has_value());
  EXPECT_TRUE(resolve_server("", Environment{"127.0.0.1:1", nullptr, nullptr}, {file}).has_value());
}

TEST_F(SettingsTest, UserFileBeforeSystemFile) {
  EXPECT_EQ(config_candidates(Environment{nullptr, "/xdg", "/home/u"}),
            (std::vector<std::string>{"/xdg/backupfs/bkptool.toml", "/etc/backupfs/bkptool.toml"}));
  EXPECT_EQ(config_candidates(Environment{nullptr, nullptr, "/home/u"}),
            (std::vector<std::string>{"/home/u/.config/backupfs/bkptool.toml",
                                      "/etc/backupfs/bkptool.toml"}));
  EXPECT_EQ(config_candidates(Environment{nullptr, "", "/home/u"}),
            (std::vector<std::string>{"/home/u/.config/backupfs/bkptool.toml",
                                      "/etc/backupfs/bkptool.toml"}));
  EXPECT_EQ(config_candidates(Environment{}),
            (std::vector<std::string>{"/etc/backupfs/bkptool.toml"}));
}

}  // namespace
}  // namespace bkp::tools
