// ControlTest: ClusterTest plus what the registration and snapshot tests ask of backupd through
// the real bkptool with --json (docs/PROTOCOL.md, "Control"): the volume list, the run history,
// the snapshots, and waits for scheduled runs.
//
// Runs are only listed once they have ended, with increasing ids, one run of a volume at a time.
// Whether a run's cut is later than an instant T is judged by its started_at, which has
// whole-second precision: only a run that started in a later second than T surely cut after T;
// one that started in the same second may have cut before or after.
#pragma once

#include <ctime>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/integration/cluster.h"

namespace bkp::it {

using Json = nlohmann::json;

// "2026-11-26T01:02:03Z" -> seconds since the epoch; nullopt for anything else.
std::optional<time_t> parse_iso8601(const std::string& text);

// The runs among `runs` whose status is `status`.
size_t count_status(const std::vector<Json>& runs, const std::string& status);

// Names in dir that start with prefix and end with suffix, sorted.
std::vector<std::string> list_dir(const std::string& dir, const std::string& prefix = "",
                                  const std::string& suffix = "");

class ControlTest : public ClusterTest {
 protected:
  // `bkptool --json ARGS...`: the document on stdout if it exited 0 with one that has
  // "ok": true; otherwise nullopt and, in *why, the exit status and output.
  std::optional<Json> bkptool_json(const std::vector<std::string>& args, std::string* why = nullptr);

  // The arrays of list / history / snapshots for this volume; nullopt (and *why) on failure.
  std::optional<Json> volumes(std::string* why = nullptr);
  std::optional<Json> runs(std::string* why = nullptr);
  std::optional<Json> snapshots(std::string* why = nullptr);
  // Waits until the newest snapshot `snapshots` lists is held by every replica named (its
  // "holders"); that snapshot, or nullopt (and *why) on timeout.
  std::optional<Json> wait_newest_held_by(const std::vector<std::string>& replicas,
                                          std::chrono::seconds timeout, std::string* why);
  // This volume's entry in `list`, if registered.
  std::optional<Json> volume(std::string* why = nullptr);

  // The ids (as JSON text) of the runs listed now; empty (and *why) on failure.
  std::set<std::string> run_ids(std::string* why = nullptr);
  // Waits until the history holds a run that is not in `known` and started in a later second
  // than `after`, so its cut is later than `after`. Returns every run not in `known`, oldest
  // first, up to and including that one: runs that started around `after` may have cut before
  // or after it. nullopt on timeout (or when backupd dies, or the watchdog fires), with *why.
  std::optional<std::vector<Json>> wait_runs_through(const std::set<std::string>& known,
                                                     time_t after, std::chrono::seconds timeout,
                                                     std::string* why = nullptr);
  // The oldest run not in `known`, waiting up to timeout.
  std::optional<Json> wait_next_run(const std::set<std::string>& known,
                                    std::chrono::seconds timeout, std::string* why = nullptr);
  // The usual step of a snapshot test: note the runs listed, make a change (change()), wait for
  // the mirror to converge and then for the runs up to one whose cut is surely later; returns
  // those runs (oldest first). One of them has the change in its cut, so if the change really
  // changed something, one of them is "written".
  std::optional<std::vector<Json>> runs_after_change(const std::function<void()>& change,
                                                     std::string* why);

  // A bkptool identity file in a scratch directory of that name (*file), and the identity it
  // holds (made on first use): an operator to authorise on a replicator's restore service.
  std::string operator_identity(const std::string& name, std::string* file);

  // Waits until `list` shows this volume connected (backupd attached to the node).
  bool wait_connected(std::chrono::seconds timeout, std::string* why = nullptr);

  // Archives under their final names in the volume's snapshots directory, and partial ones.
  std::vector<std::string> tgz_files() const;
  std::vector<std::string> tmp_files() const { return list_dir(snapshots_dir(), ".tmp-"); }

  // wait_converged(), then the wall-clock second it was seen: a run started in a later second
  // cuts a mirror that holds everything src holds now. nullopt (and *why) if it did not converge.
  std::optional<time_t> converged_at(std::string* why);
};

// Whether `tar tzf` reads the whole archive without error; *listing gets its output.
bool tar_lists(const std::string& archive, std::string* listing = nullptr);

}  // namespace bkp::it
