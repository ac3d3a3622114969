// Paths longer than PATH_MAX. An application can build a tree deeper than any one system call
// can name (a directory at a time, through descriptors); backupd once failed to apply the
// first such mkdir ("File name too long") and retried it for ever, so the volume's copies
// stopped for good at that batch. Every copy, the baseline, a verify, a snapshot and a
// restore must hold such a tree like any other, and the tree comparer must see into it.
#include <string>

#include "tests/integration/control.h"
#include "tests/integration/workload.h"

namespace bkp::it {
namespace {

class DeepPathTest : public ControlTest {};

TEST_F(DeepPathTest, APathLongerThanPathMaxReachesEveryCopyAndComesBackFromARestore) {
  make_past_path_max(src(), "before");  // shipped by the baseline
  ASSERT_TRUE(start_all("1h"));
  make_past_path_max(src(), "live");  // shipped as it is made
  put(src("beside.txt"), "a change after the deep ones\n");
  ASSERT_EQ(wait_converged(), "");

  auto verify = bkptool({"verify", node_name, src()});
  EXPECT_EQ(verify.exit_code(), 0) << verify.output;

  auto run = bkptool({"run", node_name, src()});
  ASSERT_EQ(run.exit_code(), 0) << run.output;
  const std::string restored = scratch_dir("restored");
  auto r = bkptool({"restore", node_name, src(), "--to", restored});
  ASSERT_EQ(r.exit_code(), 0) << r.output;
  EXPECT_EQ(compare_trees(src(), restored), "") << r.output;
}

}  // namespace
}  // namespace bkp::it
