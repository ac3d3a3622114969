// ControlTest (see control.h): bkptool --json round trips and bounded waits on the run history.
#include "tests/integration/control.h"

#include <dirent.h>

#include <algorithm>
#include <cstdio>

#include "tests/testutil/wait.h"

namespace bkp::it {
namespace {

constexpr auto kPoll = std::chrono::milliseconds(300);

std::string describe(const testutil::CommandResult& r) {
  std::string s = r.timed_out ? "timed out" : testutil::describe_status(r.status);
  return s + "\n" + r.output;
}

}  // namespace

std::optional<time_t> parse_iso8601(const std::string& text) {
  tm t{};
  char z = 0;
  int consumed = 0;
  if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%c%n", &t.tm_year, &t.tm_mon, &t.tm_mday,
                  &t.tm_hour, &t.tm_min, &t.tm_sec, &z, &consumed) != 7 ||
      z != 'Z' || static_cast<size_t>(consumed) != text.size() || text.size() != 20) {
    return std::nullopt;
  }
  t.tm_year -= 1900;
  t.tm_mon -= 1;
  return timegm(&t);
}

size_t count_status(const std::vector<Json>& runs, const std::string& status) {
  size_t n = 0;
  for (const auto& run : runs) n += run.value("status", "") == status ? 1 : 0;
  return n;
}

std::vector<std::string> list_dir(const std::string& dir, const std::string& prefix,
                                  const std::string& suffix) {
  std::vector<std::string> out;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    if (name.size() < prefix.size() + suffix.size()) continue;
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    if (name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    out.push_back(name);
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

bool tar_lists(const std::string& archive, std::string* listing) {
  auto r = testutil::run_command({"/bin/tar", "tzf", archive}, std::chrono::seconds(60));
  if (listing) *listing = r.output;
  return r.exit_code() == 0;
}

std::optional<Json> ControlTest::bkptool_json(const std::vector<std::string>& args,
                                              std::string* why) {
  std::vector<std::string> argv{"--json"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = bkptool(argv);
  // status HOST PATH answers with 9 when the volume has fewer current copies than it wants.
  const bool answered = r.exit_code() == 0 || (args.front() == "status" && r.exit_code() == 9);
  if (!answered) {
    if (why) *why = "bkptool " + args.front() + ": " + describe(r);
    return std::nullopt;
  }
  Json doc = Json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object() || doc.value("ok", false) != true) {
    if (why) *why = "bkptool " + args.front() + ": not an ok JSON document: " + r.out;
    return std::nullopt;
  }
  return doc;
}

std::optional<Json> ControlTest::volumes(std::string* why) {
  auto doc = bkptool_json({"list"}, why);
  if (!doc) return std::nullopt;
  if (!doc->contains("volumes") || !(*doc)["volumes"].is_array()) {
    if (why) *why = "list without a volumes array: " + doc->dump();
    return std::nullopt;
  }
  return (*doc)["volumes"];
}

std::optional<Json> ControlTest::runs(std::string* why) {
  auto doc = bkptool_json({"history", node_name, src()}, why);
  if (!doc) return std::nullopt;
  if (!doc->contains("runs") || !(*doc)["runs"].is_array()) {
    if (why) *why = "history without a runs array: " + doc->dump();
    return std::nullopt;
  }
  return (*doc)["runs"];
}

std::optional<Json> ControlTest::snapshots(std::string* why) {
  auto doc = bkptool_json({"snapshots", node_name, src()}, why);
  if (!doc) return std::nullopt;
  if (!doc->contains("snapshots") || !(*doc)["snapshots"].is_array()) {
    if (why) *why = "snapshots without a snapshots array: " + doc->dump();
    return std::nullopt;
  }
  return (*doc)["snapshots"];
}

std::optional<Json> ControlTest::wait_newest_held_by(const std::vector<std::string>& replicas,
                                                     std::chrono::seconds timeout,
                                                     std::string* why) {
  std::optional<Json> snap;
  auto held = [&] {
    auto snaps = snapshots(why);
    if (!snaps || snaps->empty()) return false;
    snap = (*snaps)[0];
    const Json& holders = (*snap)["holders"];
    return std::all_of(replicas.begin(), replicas.end(), [&](const std::string& r) {
      return std::find(holders.begin(), holders.end(), r) != holders.end();
    });
  };
  if (testutil::wait_until(held, timeout)) return snap;
  if (why) *why += snap ? "; newest: " + snap->dump() : "; no snapshot";
  return std::nullopt;
}

std::optional<Json> ControlTest::volume(std::string* why) {
  auto all = volumes(why);
  if (!all) return std::nullopt;
  for (const auto& v : *all) {
    if (v.value("host", "") == node_name && v.value("path", "") == src()) return v;
  }
  if (why) *why = "volume not in list: " + all->dump();
  return std::nullopt;
}

std::set<std::string> ControlTest::run_ids(std::string* why) {
  std::set<std::string> ids;
  if (auto all = runs(why)) {
    for (const auto& run : *all) ids.insert(run.at("id").dump());
  }
  return ids;
}

std::optional<std::vector<Json>> ControlTest::wait_runs_through(const std::set<std::string>& known,
                                                                time_t after,
                                                                std::chrono::seconds timeout,
                                                                std::string* why) {
  std::optional<std::vector<Json>> found;
  std::string last;
  testutil::wait_until(
      [&] {
        if (expired()) {
          last += " [watchdog]";
          return true;
        }
        if (backupd() == nullptr || !backupd()->alive()) {
          last += " [backupd is not running]";
          return true;
        }
        auto all = runs(&last);
        if (!all) return false;
        last = "history: " + all->dump();
        std::vector<Json> fresh;
        for (auto it = all->rbegin(); it != all->rend(); ++it) {  // oldest first
          if (known.count(it->at("id").dump())) continue;
          fresh.push_back(*it);
          auto started = parse_iso8601(it->value("started_at", ""));
          if (started && *started > after) {
            found = std::move(fresh);
            return true;
          }
        }
        return false;
      },
      timeout, kPoll);
  if (!found && why) {
    *why = "no run started after " + std::to_string(after) + " within " +
           std::to_string(timeout.count()) + " s; " + last;
  }
  return found;
}

std::optional<Json> ControlTest::wait_next_run(const std::set<std::string>& known,
                                               std::chrono::seconds timeout, std::string* why) {
  auto runs = wait_runs_through(known, 0, timeout, why);
  if (!runs) return std::nullopt;
  return runs->front();
}

std::optional<std::vector<Json>> ControlTest::runs_after_change(
    const std::function<void()>& change, std::string* why) {
  std::string failure;
  auto known = run_ids(&failure);
  if (!failure.empty()) {
    if (why) *why = failure;
    return std::nullopt;
  }
  change();
  auto converged = converged_at(why);
  if (!converged) return std::nullopt;
  return wait_runs_through(known, *converged, std::chrono::seconds(30), why);
}

std::vector<std::string> ControlTest::tgz_files() const {
  std::vector<std::string> out;
  for (auto& name : list_dir(snapshots_dir(), "", ".tgz")) {
    if (name[0] != '.') out.push_back(name);
  }
  return out;
}

std::string ControlTest::operator_identity(const std::string& name, std::string* file) {
  *file = scratch_dir(name) + "/identity.pem";
  auto r = testutil::run_command({binaries().bkptool, "--identity", *file, "--show-id"});
  EXPECT_EQ(r.exit_code(), 0) << r.output;
  return r.out.substr(0, r.out.find('\n'));
}

bool ControlTest::wait_connected(std::chrono::seconds timeout, std::string* why) {
  std::string last;
  bool ok = testutil::wait_until(
      [&] {
        if (expired()) return true;
        auto v = volume(&last);
        if (!v) return false;
        last = v->dump();
        return v->value("connected", false);
      },
      timeout, kPoll);
  ok = ok && !expired();
  if (!ok && why) *why = "not connected within " + std::to_string(timeout.count()) + " s: " + last;
  return ok;
}

std::optional<time_t> ControlTest::converged_at(std::string* why) {
  std::string d = wait_converged();
  if (!d.empty()) {
    if (why) *why = d;
    return std::nullopt;
  }
  return time(nullptr);
}

}  // namespace bkp::it
