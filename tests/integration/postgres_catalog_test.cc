// backupd with its catalog in PostgreSQL (backupd.toml `catalog`): the registration made
// through bkptool is stored there, not in STATE/catalog.db, and a restarted backupd finds it
// and attaches to the node by itself, every copy converging again; a catalog that cannot be
// reached stops backupd at startup with a message naming it, its password masked.
#include <sys/wait.h>

#include <filesystem>
#include <memory>

#include "tests/integration/cluster.h"
#include "tests/integration/workload.h"
#include "tests/testutil/daemon.h"
#include "tests/testutil/postgres_db.h"
#include "tests/testutil/temp_dir.h"

namespace bkp::it {
namespace {

class PostgresCatalogTest : public ClusterTest {
 protected:
  // A member, so that it is dropped after TearDown has stopped backupd.
  std::unique_ptr<testutil::PostgresDb> db_;
};

TEST_F(PostgresCatalogTest, ARegistrationInPostgresOutlivesARestartOfBackupd) {
  auto db = testutil::PostgresDb::for_test();
  ASSERT_TRUE(db) << db.error().message;
  if (!*db) GTEST_SKIP() << testutil::kNoPostgresServer;
  db_ = std::move(*db);
  std::string config = scratch_dir("config") + "/backupd.toml";
  put(config, "catalog = \"" + db_->url() + "\"\nserver_name = \"a\"\n");
  backupd_args = {"--config", config};

  ASSERT_TRUE(start_all());
  mkdirs(src("app"));
  for (int i = 0; i < 20; ++i) put(src("app/before" + std::to_string(i)), std::to_string(i));
  ASSERT_EQ(wait_converged(), "");
  EXPECT_FALSE(std::filesystem::exists(state_dir() + "/catalog.db"));

  uint16_t port = this->port();
  ASSERT_TRUE(stop_server());
  for (int i = 0; i < 20; ++i) put(src("app/during" + std::to_string(i)), std::to_string(i));
  ASSERT_TRUE(start_server(port));
  ASSERT_EQ(wait_converged(), "");
  auto status = bkptool({"status"});
  EXPECT_EQ(status.exit_code(), 0) << status.output;
  EXPECT_NE(status.out.find(node_name), std::string::npos) << status.output;
}

TEST(PostgresCatalogStartTest, AnUnreachableCatalogStopsBackupdNamingItWithoutThePassword) {
  testutil::TempDir tmp("bkp-pg-config");
  std::string config = tmp.sub("backupd.toml");
  put(config, "catalog = \"postgresql://backupd:s3cret@127.0.0.1:1/catalog\"\nserver_name = \"a\"\n");
  auto r = testutil::run_command(
      {Binaries::find().backupd, "--config", config, "--state-dir", tmp.sub("state"), "--listen",
       "127.0.0.1:0", "--control-socket", tmp.sub("control.sock"), "--http-listen", "off"},
      std::chrono::seconds(30));
  ASSERT_TRUE(WIFEXITED(r.status)) << r.output;
  EXPECT_NE(WEXITSTATUS(r.status), 0) << r.output;
  EXPECT_NE(r.err.find("catalog postgresql://backupd:***@127.0.0.1:1/catalog: cannot connect"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(r.output.find("s3cret"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace bkp::it
