// Fuzz target: the receiving end of a stream (common/stream/receiver.h) over an Applier, as
// backupd runs it for each node and each replica runs it for backupd: hellos of several stream
// instances, operations and writes a hostile sender chose (program.h), commits of right and
// wrong batch numbers, and restarts at any point: crashes (the Receiver and its Applier dropped
// without a word and opened again from disk) and clean stops, on the same boot of the machine
// or after a restart of the machine.
// Properties, checked against a model of what the receiver acknowledged:
// - a commit succeeds only for the batch after the session's last one, and returns it;
// - the stream it records is the one whose commit it acknowledged last, and after a crash its
//   position names that commit (nothing acknowledged is forgotten, nothing unacknowledged is
//   claimed);
// - unless it asks for a baseline, a position after a restart says exactly how many operations
//   of the unfinished batch it applied, so a sender resuming there applies none twice and skips
//   none;
// - after a crash and a restart of the machine, a receiver that had changed its tree since its
//   last commit or clean stop asks the recorded stream for a baseline (the page cache that held
//   those changes may be gone).
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "common/stream/receiver.h"
#include "tests/fuzz/fuzz.h"
#include "tests/fuzz/program.h"
#include "tests/testutil/stream_ends.h"

namespace {

namespace fs = std::filesystem;

const fs::path& scratch() { return bkp::fuzz::scratch_root("receiver"); }

// What the receiver has told its senders.
struct Model {
  uint64_t instance = 0;   // the stream of the last acknowledged commit (0: none)
  uint64_t committed = 0;  // that commit's batch
  uint64_t session = 0;    // instance of the current session (0: no hello yet)
  uint64_t session_committed = 0;
  uint64_t applied = 0;    // operations applied of the session's unfinished batch
  // The last operation applied, as the receiver must have noted it (in the page cache) for a
  // crash: its stream, batch, and count within the batch.
  uint64_t noted_instance = 0, noted_batch = 0, noted_applied = 0;
  bool changed = false;         // the tree changed since the last commit or clean stop
  bool baseline_owed = false;   // the recorded stream's next hello must be asked for a baseline

  void applied_one() {
    ++applied;
    noted_instance = session;
    noted_batch = session_committed + 1;
    noted_applied = applied;
    changed = true;
  }
};

uint64_t boots = 0;  // BKP_TEST_BOOT_ID: a new value is a restart of the machine

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  for (const auto& e : fs::directory_iterator(scratch())) fs::remove_all(e.path());
  auto sink = bkp::testutil::Sink::open(scratch().string(), "tree", "ids");
  FUZZ_CHECK(sink.has_value(), "the receiver does not open");
  bkp::testutil::Sink& o = **sink;
  Model m;
  bkp::fuzz::Input in(data, size);
  const std::string outside = (scratch() / "outside").string();
  for (int steps = 0; !in.done() && steps < 64; ++steps) {
    switch (in.byte() % 10) {
      case 0: {  // a (re)connecting sender
        uint64_t instance = in.byte() % 3;
        auto p = o.receiver().position(instance);
        if (instance == 0 || instance != m.instance) {
          FUZZ_CHECK(p.committed == 0 && p.need_baseline == 1 && p.applied == 0,
                     "an unknown stream is not asked for a baseline from batch 1");
          m.session_committed = 0;
        } else {
          FUZZ_CHECK(p.committed == m.committed, "a known stream is told another commit");
          FUZZ_CHECK(p.need_baseline == 1 || !m.baseline_owed,
                     "changes a restart of the machine may have lost are not repaired");
          FUZZ_CHECK(p.need_baseline == 1 || p.applied == (m.session == instance ? m.applied : 0),
                     "a resuming stream is told another count of applied operations");
          m.applied = p.need_baseline == 1 ? 0 : p.applied;
          m.session_committed = m.committed;
        }
        if (instance == 0 || instance != m.instance) m.applied = 0;
        m.session = instance;
        m.baseline_owed = false;
        break;
      }
      case 1: {
        uint64_t batch = in.byte() % 4 == 0 ? in.byte() : m.session_committed + 1;
        auto r = o.receiver().commit({batch});
        if (batch != m.session_committed + 1) {
          FUZZ_CHECK(!r && r.error().code == EPROTO, "a commit of the wrong batch was taken");
        } else if (r) {
          FUZZ_CHECK(*r == batch, "a commit acknowledged another batch");
          m.instance = m.session;
          m.committed = m.session_committed = batch;
          m.applied = 0;
          m.changed = false;
        }
        break;
      }
      case 2: {  // a restart: everything in memory is gone
        const uint8_t how = in.byte();
        const bool killed = (how & 1) == 0, machine = (how & 2) != 0;
        if (machine) ::setenv("BKP_TEST_BOOT_ID", ("boot " + std::to_string(++boots)).c_str(), 1);
        // Set before the restart; a receiver stopping cleanly still stamps the boot it opened on.
        using Stop = bkp::testutil::Sink::Stop;
        FUZZ_CHECK(o.restart(killed ? Stop::kKilled : Stop::kClean).has_value(),
                   "the receiver does not open again");
        FUZZ_CHECK(o.receiver().instance() == m.instance && o.receiver().committed() == m.committed,
                   "a restart lost or invented a commit");
        if (killed && machine && m.changed) m.baseline_owed = true;
        if (!killed) m.changed = false;
        // It goes on as the stream it recorded, knowing what it had applied of that stream's
        // next batch, even if another stream said hello since (and applied nothing).
        m.session = m.instance;
        m.session_committed = m.committed;
        bool ours = m.noted_instance == m.instance && m.noted_batch == m.committed + 1;
        m.applied = ours ? m.noted_applied : 0;
        break;
      }
      case 3:
        if (o.receiver().write(bkp::fuzz::write(in))) m.changed = true;
        break;
      case 4:
      case 5: {  // an operation that succeeds, so batches hold some to count
        bkp::wire::Op mkdir;
        mkdir.path = "d" + std::to_string(steps) + "-" + std::to_string(in.byte());
        mkdir.mode = 0755;
        if (o.receiver().apply(mkdir)) m.applied_one();
        break;
      }
      default:
        if (o.receiver().apply(bkp::fuzz::op(in, outside))) m.applied_one();
    }
  }
  return 0;
}
