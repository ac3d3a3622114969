// The application never waits for the server (DESIGN.md invariant 1): while no backupd is
// attached (none running, nothing registered), everything works through the mount as on a plain
// directory. Once backupd runs and the volume is registered, backupd attaches and the recorded
// changes reach the mirror and the replicas.
#include <signal.h>
#include <unistd.h>

#include "tests/integration/cluster.h"
#include "tests/integration/workload.h"

namespace bkp::it {
namespace {

void offline_work(const std::string& root) {
  mkdirs(root + "/app/logs");
  for (int i = 0; i < 100; ++i) {
    put(root + "/app/item" + std::to_string(i), random_string(100 + i * 13, 300 + i));
  }
  write_big_file(root + "/app/store.bin", 8 * kMiB, 77);
  write_at(root + "/app/store.bin", 3 * kMiB + 1, random_string(5000, 78));
  for (int i = 0; i < 50; ++i)
    append(root + "/app/logs/app.log", "event " + std::to_string(i) + "\n");
  must(rename((root + "/app/item1").c_str(), (root + "/app/item-renamed").c_str()), "rename");
  must(unlink((root + "/app/item2").c_str()), "unlink");
  must(link((root + "/app/item3").c_str(), (root + "/app/logs/item3-link").c_str()), "link");
  must(symlink("item4", (root + "/app/item4-sym").c_str()), "symlink");
  must(chmod((root + "/app/item5").c_str(), 0600), "chmod");
  truncate_to(root + "/app/item6", 10);
}

class OfflineTest : public ClusterTest {};

TEST_F(OfflineTest, AppWorksWhileNoBackupdIsAttachedAndConvergesAfterRegistration) {
  ASSERT_TRUE(mount_source());

  offline_work(ref());
  bool finished = finishes_within([&] { offline_work(src()); }, 60s,
                                  [&] { mount()->process().signal(SIGKILL); });
  ASSERT_TRUE(finished) << "writes through the mount blocked with no server";
  EXPECT_EQ(compare_trees(ref(), src(), {.mtime = false}), "")
      << "the application does not see what it wrote";
  EXPECT_EQ(slurp(src("app/item7")), random_string(100 + 7 * 13, 307));
  ASSERT_TRUE(mount()->process().alive()) << "backupfs died without a backupd";

  ASSERT_TRUE(start_server());
  ASSERT_TRUE(start_replicators());
  ASSERT_TRUE(register_volume());
  ASSERT_EQ(wait_converged(), "");
}

}  // namespace
}  // namespace bkp::it
