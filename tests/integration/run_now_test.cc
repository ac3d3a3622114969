// A run out of schedule (`bkptool run`, Scheduler::run_now) and `bkptool restore --live`: the
// restore of the tree as the mirror holds it at the call, by way of a run that starts after
// it; nothing is written when nothing changed, and the schedule does not move.
#include <string>

#include "tests/integration/control.h"
#include "tests/integration/workload.h"

namespace bkp::it {
namespace {

class RunNowTest : public ControlTest {};

TEST_F(RunNowTest, RunWritesAtOnceAndLiveRestoresTheTreeAsItIsNow) {
  ASSERT_TRUE(start_all("1h", /*with_replicators=*/false));
  apply_mix(src(), 30);
  ASSERT_EQ(wait_converged(), "");
  std::string why;
  auto before = volume(&why);
  ASSERT_TRUE(before) << why;

  auto run = bkptool_json({"run", node_name, src()}, &why);
  ASSERT_TRUE(run) << why;
  EXPECT_EQ((*run)["run"]["status"], "written") << run->dump();
  auto again = bkptool({"run", node_name, src()});
  ASSERT_EQ(again.exit_code(), 0) << again.output;
  EXPECT_NE(again.err.find("unchanged since the last snapshot"), std::string::npos)
      << again.output;
  auto after = volume(&why);
  ASSERT_TRUE(after) << why;
  EXPECT_EQ((*after)["next_run"], (*before)["next_run"]) << "the schedule did not move";

  // Unchanged: the latest snapshot is the live tree.
  const std::string same = scratch_dir("same");
  auto r = bkptool({"restore", node_name, src(), "--live", "--to", same});
  ASSERT_EQ(r.exit_code(), 0) << r.output;
  EXPECT_NE(r.err.find("unchanged since the latest snapshot"), std::string::npos) << r.output;
  EXPECT_EQ(compare_trees(src(), same), "");

  // Changed: a new snapshot is taken first, and that is what is restored.
  put(src("new-file"), "written after the last snapshot");
  ASSERT_EQ(wait_converged(), "");
  const std::string live = scratch_dir("live");
  r = bkptool({"restore", node_name, src(), "--live", "--to", live});
  ASSERT_EQ(r.exit_code(), 0) << r.output;
  EXPECT_NE(r.err.find("taken now"), std::string::npos) << r.output;
  EXPECT_EQ(compare_trees(src(), live), "");
  auto history = runs(&why);
  ASSERT_TRUE(history) << why;
  EXPECT_EQ(count_status(*history, "written"), 2u) << history->dump();

  // --live is the tree now: no --snapshot, no --from.
  auto mixed = bkptool({"restore", node_name, src(), "--live", "--snapshot", "x", "--to",
                        scratch_dir("mixed")});
  EXPECT_EQ(mixed.exit_code(), 2) << mixed.output;
  auto unknown = bkptool({"run", node_name, "/nowhere"});
  EXPECT_EQ(unknown.exit_code(), 4) << unknown.output;
}

}  // namespace
}  // namespace bkp::it
