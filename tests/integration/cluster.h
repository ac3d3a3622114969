// ClusterTest: the fixture of every integration test. One backupd, two replicators and one
// backupfs mount, all real processes on 127.0.0.1, in one temporary directory:
//
//   TMP/src              the application directory; backupfs is mounted over it and listens on
//                        127.0.0.1 (--listen 127.0.0.1:PORT --port-file TMP/node-port)
//   TMP/ref              a plain directory that receives the same operations, never mounted:
//                        what the application should see, to check backupfs itself
//   TMP/state            backupd --state-dir; TMP/state/control.sock its control socket
//   TMP/r1, TMP/r2       replicator --root; TMP/r1-metrics-port, TMP/r2-metrics-port their
//                        --metrics-port-file when a test sets replicator_metrics
//   TMP/node-state       backupfs --state-dir (its identity)
//
// Every link runs TLS with identities, as in production: backupfs is told backupd's identity
// (--server-id, read with `backupd --show-id` before anything starts), so are the replicators,
// and start_server() authorises both replicators (`bkptool replica add`) once backupd is up;
// `bkptool register` pins the node's identity on first contact.
//   TMP/logs/*.log       every process's stdout and stderr, printed when a test fails
//
// The volume reaches backupd the way an operator makes it: the real bkptool registers it
// (`bkptool --server TMP/state/control.sock register 127.0.0.1 NODEPORT TMP/src --every 1h`), and
// backupd connects to the node. The default period is long so scheduled snapshots stay out of
// the data-path tests; the snapshot tests pass a short one.
//
// Teardown always runs in the order that loses nothing: unmount (backupfs ships what is left
// and exits 0), stop the replicators, SIGTERM backupd (exit 0). A watchdog bounds every test:
// when BKP_TEST_WATCHDOG_SECONDS (set by CTest, below the CTest timeout) pass, it kills the
// backupfs process group so any call blocked on the mount returns, and makes every wait give
// up, so the normal teardown still unmounts and stops everything before CTest would kill us.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "tests/testutil/daemon.h"
#include "tests/testutil/files.h"
#include "tests/testutil/mounted_fs.h"
#include "tests/testutil/temp_dir.h"
#include "tests/testutil/tree_compare.h"

namespace bkp::it {

using namespace std::chrono_literals;
using testutil::compare_trees;

// Where backupd reaches the node (`bkptool register kHost PORT ...`). Unless a test sets
// node_name, backupfs is told the same name (--host), so the volume is named kHost too.
constexpr char kHost[] = "127.0.0.1";

// Paths of the binaries under test: $BKP_BACKUPD / $BKP_REPLICATOR / $BKP_BACKUPFS /
// $BKP_BKPTOOL, else the ones this test binary was built with.
struct Binaries {
  std::string backupd;
  std::string replicator;
  std::string backupfs;
  std::string bkptool;
  static Binaries find();
};

// A port nothing listens on right now (bound to 0 and released): for tests that must restart a
// process on a port they chose. Another process could take it meanwhile; on 127.0.0.1 in a test
// run that does not happen in practice.
uint16_t free_port();

// Runs fn on another thread. If it has not returned after timeout, calls unblock() (which must
// make fn's blocking calls return, e.g. by killing the FUSE server) and joins. Exceptions from
// fn are rethrown here. True if fn finished in time.
bool finishes_within(const std::function<void()>& fn, std::chrono::milliseconds timeout,
                     const std::function<void()>& unblock);

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;
  ~ClusterTest() override;

  // Each returns a failure with the process's log if it does not come up.
  ::testing::AssertionResult start_server(uint16_t port = 0);  // 0: any free port
  ::testing::AssertionResult stop_server();                    // SIGTERM, expects exit 0
  ::testing::AssertionResult kill_server();                    // SIGKILL, no questions asked
  ::testing::AssertionResult start_replicators();
  // Replicator i (0 or 1) alone: started again (same root and name), or SIGKILLed.
  ::testing::AssertionResult start_replicator(int i);
  ::testing::AssertionResult kill_replicator(int i);
  // backupfs over src, listening on 127.0.0.1:node_port (0: any free port, read back from its
  // port file into node_port()).
  ::testing::AssertionResult mount_source(uint16_t node_port = 0);
  // bkptool register kHost node_port() src --every every [--copies copies]; expects exit 0.
  ::testing::AssertionResult register_volume(const std::string& every = "1h");
  // start_server(), start_replicators() (unless with_replicators is false), mount_source(),
  // register_volume(every).
  ::testing::AssertionResult start_all(const std::string& every = "1h",
                                       bool with_replicators = true);
  // Unmounts and expects backupfs to exit 0.
  ::testing::AssertionResult unmount_source();
  // Unmounts and returns the wait status of the backupfs mount_source() started, whatever it
  // is (for a test that killed it); an error if the mount could not be removed cleanly.
  Result<int> unmount_source_status();

  // Runs `bkptool --server control_socket() ARGS...` (bounded by timeout): the operator on the
  // server host, through backupd's local control socket.
  testutil::CommandResult bkptool(const std::vector<std::string>& args,
                                  std::chrono::milliseconds timeout = 60s);

  uint16_t port() const { return port_; }            // backupd's
  // backupd's status page and metrics (--http-listen 127.0.0.1:0); 0 if it has none.
  uint16_t http_port() const { return testutil::read_port_file(http_port_file()).value_or(0); }
  std::string http_port_file() const { return http_port_file_; }
  // Replicator i's /metrics port (--metrics-listen 127.0.0.1:0 when replicator_metrics is set);
  // 0 if it has none (yet).
  uint16_t replica_metrics_port(int i) const {
    return testutil::read_port_file(replica_metrics_port_files_[i]).value_or(0);
  }
  uint16_t node_port() const { return node_port_; }  // backupfs's
  const std::string& src() const { return src_; }
  const std::string& ref() const { return ref_; }
  std::string src(const std::string& rel) const { return src_ + "/" + rel; }
  std::string ref(const std::string& rel) const { return ref_ + "/" + rel; }
  const std::string& state_dir() const { return state_; }
  // backupd --control-socket: STATE/control.sock.
  std::string control_socket() const { return state_ + "/control.sock"; }
  // A fresh directory under the test's temporary directory.
  std::string scratch_dir(const std::string& name) const;
  // A datagram socket bound at path, in systemd's place for a daemon given NOTIFY_SOCKET=path
  // (flags: e.g. SOCK_NONBLOCK). An invalid descriptor if it cannot be made (a failure is added).
  UniqueFd notify_socket(const std::string& path, int flags = 0) const;
  // STATE/volumes/<node_name>/<escape_path(src)>/{mirror,stats,snapshots}
  std::string volume_dir() const { return volume_dir(node_name); }
  std::string volume_dir(const std::string& name) const;
  std::string mirror() const { return volume_dir() + "/mirror"; }
  std::string snapshots_dir() const { return volume_dir() + "/snapshots"; }
  // ROOT/<node_name>/<src without leading '/'>
  std::string replica(int i) const;
  // Replicator i's --root.
  const std::string& replica_root(int i) const { return roots_[i]; }
  // Identities (grouped fingerprints): backupd's, the node's and replicator i's.
  const std::string& server_id() const { return server_id_; }
  const std::string& node_id() const { return node_id_; }
  const std::string& replica_id(int i) const { return replica_ids_[i]; }
  // backupfs --state-dir.
  const std::string& node_state_dir() const { return node_state_; }

  // "" once src == mirror (unless compare_mirror is false) == r1 == r2 (when the replicators
  // run) in content, type, mode, owner, symlinks, hard links and mtime; otherwise, after
  // timeout or as soon as a daemon dies, the first difference (or the death).
  std::string wait_converged(std::chrono::seconds timeout = 90s,
                             const testutil::CompareOptions& options = {});
  // The volume's stats file on backupd (wire_bytes, data_bytes, ops, batches).
  std::optional<std::map<std::string, uint64_t>> server_stats() const;
  // Lines of backupd's log that contain "error" (any case).
  size_t server_error_lines() const;
  // The text of a process's log: "backupd", "r1", "r2", "backupfs" ("" if none yet).
  std::string log_text(const std::string& name) const;
  // Whether the watchdog fired: every wait should give up.
  bool expired() const { return expired_; }

  testutil::Daemon* backupd() { return backupd_.get(); }
  testutil::Daemon* replicator(int i) { return replicators_[i].get(); }
  // If set before the processes start: every daemon gets --progress-every this many seconds.
  std::string progress_every;
  // How wait_converged() tells that backupfs still runs; unset: the process mount_source()
  // started is alive. A test that starts backupfs's keeper another way sets it.
  std::function<bool()> backupfs_alive;
  // If set before mount_source(): the backupfs binary to run instead of binaries().backupfs (a
  // copy a test can replace, as an upgrade would).
  std::string backupfs_binary;
  // Further flags for backupd (start_server) and backupfs (mount_source).
  std::vector<std::string> backupd_args, backupfs_args;
  // If set before start_server(): the command backupd runs under, its argv before backupd's
  // (e.g. setpriv taking a capability away).
  std::vector<std::string> backupd_wrapper;
  // False: wait_converged() leaves backupd's mirror out, for a test whose mirror holds what a
  // plain comparison cannot read (device node placeholders); bkptool verify checks it instead.
  bool compare_mirror = true;
  // "NAME=VALUE" entries added to backupfs's environment (mount_source), e.g. a failpoint,
  // and to backupd's (start_server), e.g. BACKUPD_TEST_ARCHIVE_DELAY_MS.
  std::vector<std::string> backupfs_env, backupd_env;
  // If set before start_replicator(): replicator i serves /metrics (replica_metrics_port(i)).
  bool replicator_metrics = false;
  // Further flags for replicator i (start_replicator), e.g. --listen for restores from it, or
  // another --server (with its --server-id) to follow besides backupd.
  std::vector<std::string> replicator_args[2];
  // If set before start_replicator(): the ADDR:PORT replicator i follows instead of backupd's
  // (e.g. a relay in front of it).
  std::string replicator_server[2];
  // "NAME=VALUE" entries added to every replicator's environment (start_replicator).
  std::vector<std::string> replicator_env;
  // register_volume's --copies ("": backupd's default, 3; start_all without replicators: 1).
  std::string copies;
  // backupfs --host of mount_source(), so the volume's name: where its mirror and replicas are
  // (volume_dir(), replica()) and what the ControlTest helpers ask backupd about.
  std::string node_name = kHost;
  const Binaries& binaries() const { return bin_; }
  // TMP/logs/NAME.log, where a daemon a test starts itself should log (printed on failure).
  std::string log_path(const std::string& name) const { return logs_ + "/" + name + ".log"; }
  testutil::MountedFs* mount() { return mount_.get(); }

 private:
  void print_logs() const;
  std::vector<std::string> with_progress(std::vector<std::string> args) const;
  void start_watchdog();
  void stop_watchdog();

  Binaries bin_;
  std::optional<testutil::TempDir> tmp_;
  std::string src_, ref_, state_, logs_, port_file_, node_port_file_, http_port_file_;
  std::string roots_[2], replica_metrics_port_files_[2];
  std::string node_state_, server_id_, node_id_, replica_ids_[2];
  uint16_t port_ = 0;
  uint16_t node_port_ = 0;

  std::unique_ptr<testutil::Daemon> backupd_;
  std::unique_ptr<testutil::Daemon> replicators_[2];
  std::unique_ptr<testutil::MountedFs> mount_;  // last: destroyed (unmounted) first

  std::atomic<bool> expired_{false};
  std::atomic<pid_t> fuse_pgid_{0};
  std::mutex watchdog_mu_;
  std::condition_variable watchdog_cv_;
  bool watchdog_stop_ = false;
  std::thread watchdog_;
};

}  // namespace bkp::it
