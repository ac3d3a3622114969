// bkp_takeover_bench: the takeover time for N volumes (issue 16), the step of
// bench/scale_out.sh that ServerTakeoverTest cannot give: that test times one volume.
//
// One round, on real daemons as an operator runs them: two backupd (SharedCatalogServer) on a
// fresh database of the PostgreSQL server given, leases of --lease-seconds; N backupfs mounts,
// each over a source directory of its own holding --files files of --file-kib KiB, each its own
// node (backupfs --host node-J) accepting both servers. Volumes are placed by rendezvous hashing
// (server/owners.h), so the node names are picked, among node-0, node-1, ..., to put
// ceil(N/2) volumes on backup-1 and the rest on backup-2: the same split every round, whatever
// the scratch directory's random name hashes to. Once every mirror equals its source, backup-1
// is killed (kill -9), one file is written on each of its volumes, and the clock runs until
//   served:  `bkptool list` on backup-2 names backup-2 as the server of every one of them;
//   mirrors: backup-2's mirror of every one of them equals its source (testutil's comparer).
// Prints "volumes N", "volumes_moved M", "takeover_served_ms T", "takeover_mirrors_ms T" and
// "setup_s S" (mounting, registering and the first mirrors, for information). Everything is
// stopped at the end, mounts first; scratch goes under $BKP_TEST_TMPDIR (testutil::TempDir).
#include <sys/wait.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "server/owners.h"
#include "tests/testutil/daemon.h"
#include "tests/testutil/files.h"
#include "tests/testutil/mounted_fs.h"
#include "tests/testutil/postgres_db.h"
#include "tests/testutil/shared_catalog_server.h"
#include "tests/testutil/temp_dir.h"
#include "tests/testutil/tree_compare.h"
#include "tests/testutil/wait.h"

namespace bkp::bench {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using testutil::SharedCatalogServer;

struct Settings {
  std::string catalog_server;  // postgresql://... of the server's maintenance database
  int volumes = 2;
  int files = 8;
  int file_kib = 512;
  int lease_seconds = 3;
};

// One node and its volume: backupfs mounted over src, named host.
struct Volume {
  std::string host;
  std::string src;
  size_t owner = 0;  // index of the server it belongs on
  uint16_t port = 0;
  std::unique_ptr<testutil::MountedFs> mount;
};

// Everything one round runs, destroyed in the order that loses nothing: mounts first (backupfs
// ships what is left to the survivor), then the servers, the database, the scratch directory.
struct Round {
  testutil::TempDir tmp{"bkp-takeover"};
  std::unique_ptr<testutil::PostgresDb> db;
  std::unique_ptr<SharedCatalogServer> servers[2];
  std::vector<Volume> volumes;
};

const std::string kServerNames[2] = {"backup-1", "backup-2"};

long long ms_since(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
}

// The volumes' names and sources: node-J for J = 0, 1, ..., each kept while the server it
// hashes to still has room (ceil(n/2) on server 0, the rest on server 1).
std::vector<Volume> place(const testutil::TempDir& tmp, int n) {
  const std::vector<std::string> names(std::begin(kServerNames), std::end(kServerNames));
  int room[2] = {(n + 1) / 2, n / 2};
  std::vector<Volume> out;
  for (int j = 0; static_cast<int>(out.size()) < n; ++j) {
    Volume v{.host = fmt::format("node-{}", j), .src = tmp.sub(fmt::format("node-{}", j))};
    const std::string owner = server::preferred_owner(v.host + ":" + v.src, names);
    v.owner = owner == names[0] ? 0 : 1;
    if (room[v.owner] == 0) continue;
    --room[v.owner];
    out.push_back(std::move(v));
  }
  return out;
}

// kib KiB of seed's bytes (testutil::random_bytes) at path.
void write_data(const std::string& path, int kib, uint64_t seed) {
  auto bytes = testutil::random_bytes(static_cast<size_t>(kib) * 1024, seed);
  testutil::write_file(path, std::string_view(reinterpret_cast<const char*>(bytes.data()),
                                               bytes.size()));
}

// The source's files, then backupfs over it, accepting both servers.
Result<void> mount(Round& r, Volume& v, const Settings& s, const std::string& backupfs,
                   uint64_t seed) {
  r.tmp.mkdir(v.host);
  for (int i = 0; i < s.files; ++i) {
    write_data(fmt::format("{}/f{:03}", v.src, i), s.file_kib, seed * 1000 + i);
  }
  const std::string port_file = r.tmp.sub(v.host + "-port");
  testutil::MountOptions opts{
      .binary = backupfs,
      .dir = v.src,
      .args = {"--listen", "127.0.0.1:0", "--port-file", port_file, "--host", v.host,
               "--state-dir", r.tmp.mkdir(v.host + "-state"), "--server-id",
               r.servers[0]->id(), "--server-id", r.servers[1]->id()},
      .log_path = r.tmp.sub("logs/" + v.host + ".log")};
  v.mount = BKP_TRY(testutil::MountedFs::mount(opts));
  std::optional<uint16_t> port;
  testutil::wait_until([&] { return (port = testutil::read_port_file(port_file)).has_value(); },
                       10s, 20ms);
  if (!port) return fail(ETIMEDOUT, v.host + ": backupfs mounted but wrote no port file");
  v.port = *port;
  return {};
}

// Registered through the server it belongs on, which serves it at once. One copy: no
// replicators here.
Result<void> register_volume(Round& r, const Volume& v, const std::string& bkptool) {
  auto reg = testutil::run_command({bkptool, "--server", r.servers[v.owner]->control_socket(),
                                    "register", "127.0.0.1", std::to_string(v.port), v.src,
                                    "--every", "1h", "--copies", "1"},
                                   60s);
  if (reg.exit_code() != 0) return fail(EIO, "bkptool register " + v.host + ": " + reg.output);
  return {};
}

// Waits until every volume of `which` is served by server `by` (as `list` there says) and its
// mirror there equals its source; *served_ms and *mirrors_ms get when each first held, in ms
// since t0. A failure names the volumes still missing.
Result<void> wait_served(Round& r, const std::vector<Volume*>& which, size_t by,
                         const std::string& bkptool, Clock::time_point t0,
                         std::chrono::seconds timeout, long long* served_ms,
                         long long* mirrors_ms) {
  SharedCatalogServer& server = *r.servers[by];
  std::set<const Volume*> unequal(which.begin(), which.end());
  std::string why;
  *served_ms = *mirrors_ms = -1;
  testutil::wait_until(
      [&] {
        if (!server.process().alive()) return true;
        if (*served_ms < 0) {
          auto owners = testutil::served_by(bkptool, server.control_socket());
          bool all = owners.has_value();
          for (const Volume* v : which) {
            all = all && owners->contains(v->src) && owners->at(v->src) == server.name();
          }
          if (all) *served_ms = ms_since(t0);
        }
        for (auto it = unequal.begin(); it != unequal.end();) {
          why = testutil::compare_trees((*it)->src, server.mirror((*it)->host, (*it)->src));
          it = why.empty() ? unequal.erase(it) : std::next(it);
          if (!why.empty()) break;  // the next poll goes on from here
        }
        if (unequal.empty() && *mirrors_ms < 0) *mirrors_ms = ms_since(t0);
        return *served_ms >= 0 && *mirrors_ms >= 0;
      },
      timeout, 100ms);
  if (!server.process().alive()) {
    return fail(EIO, fmt::format("backupd {} died: {}\n{}", server.name(),
                                 testutil::describe_status(*server.process().status()),
                                 server.process().log_tail()));
  }
  if (*served_ms < 0 || *mirrors_ms < 0) {
    return fail(ETIMEDOUT,
                fmt::format("after {} s: {} of {} volumes served by {}, {} mirrors differ ({}: "
                            "{})\n{}",
                            timeout.count(), *served_ms < 0 ? "not all" : "all", which.size(),
                            server.name(), unequal.size(),
                            unequal.empty() ? "" : (*unequal.begin())->host, why,
                            server.process().log_tail()));
  }
  return {};
}

int run(const Settings& s, const std::string& backupd, const std::string& backupfs,
        const std::string& bkptool) {
  Round r;
  auto fail_with = [](const Error& e) {
    std::fprintf(stderr, "bkp_takeover_bench: %s\n", e.message.c_str());
    return 1;
  };
  auto db = testutil::PostgresDb::create(s.catalog_server);
  if (!db) return fail_with(db.error());
  r.db = std::move(*db);
  r.tmp.mkdir("logs");
  for (size_t i = 0; i < 2; ++i) {
    const std::string& name = kServerNames[i];
    auto server = SharedCatalogServer::start({.backupd = backupd,
                                              .name = name,
                                              .catalog_url = r.db->url(),
                                              .lease_seconds = s.lease_seconds,
                                              .dir = r.tmp.mkdir(name),
                                              .log_path = r.tmp.sub("logs/" + name + ".log")});
    if (!server) return fail_with(server.error());
    r.servers[i] = std::move(*server);
  }

  const auto setup = Clock::now();
  r.volumes = place(r.tmp, s.volumes);
  std::vector<Volume*> on[2];
  for (size_t i = 0; i < r.volumes.size(); ++i) {
    Volume& v = r.volumes[i];
    if (auto ok = mount(r, v, s, backupfs, i + 1); !ok) return fail_with(ok.error());
    if (auto ok = register_volume(r, v, bkptool); !ok) return fail_with(ok.error());
    on[v.owner].push_back(&v);
  }
  long long served_ms, mirrors_ms;
  const auto first_timeout = std::chrono::seconds(60 + 10 * s.volumes);
  for (size_t i = 0; i < 2; ++i) {
    if (auto ok = wait_served(r, on[i], i, bkptool, setup, first_timeout, &served_ms, &mirrors_ms);
        !ok) {
      return fail_with(ok.error());
    }
  }
  std::printf("setup_s %.1f\n", ms_since(setup) / 1000.0);

  // kill -9 of backup-1, then a change on each of its volumes while nobody serves them.
  r.servers[0]->process().signal(SIGKILL);
  const auto killed = Clock::now();
  if (!r.servers[0]->process().wait_exit(10s)) {
    return fail_with(Error{EIO, "backup-1 survived SIGKILL for 10 s"});
  }
  for (size_t i = 0; i < on[0].size(); ++i) {
    write_data(on[0][i]->src + "/after-kill", s.file_kib, 1000000 + i);
  }
  if (auto ok = wait_served(r, on[0], 1, bkptool, killed,
                            std::chrono::seconds(60 + 10 * on[0].size()), &served_ms,
                            &mirrors_ms);
      !ok) {
    return fail_with(ok.error());
  }
  std::printf("volumes %d\nvolumes_moved %zu\ntakeover_served_ms %lld\ntakeover_mirrors_ms %lld\n",
              s.volumes, on[0].size(), served_ms, mirrors_ms);

  // Unmounted while backup-2 runs: each backupfs ships what is left and exits 0.
  for (Volume& v : r.volumes) {
    auto status = v.mount->unmount();
    if (!status) return fail_with(status.error());
    if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
      return fail_with(Error{EIO, fmt::format("backupfs of {} after unmount: {}", v.host,
                                              testutil::describe_status(*status))});
    }
    v.mount.reset();
  }
  return 0;
}

}  // namespace
}  // namespace bkp::bench

int main(int argc, char** argv) {
  bkp::bench::Settings s;
  CLI::App app{"The takeover time for N volumes of a killed backupd (bench/scale_out.sh)"};
  app.add_option("--catalog-server", s.catalog_server,
                 "PostgreSQL server URL (tests/scale/postgres.sh's BKP_TEST_POSTGRES_URL)")
      ->required();
  app.add_option("--volumes", s.volumes, "volumes, each a backupfs mount")->check(
      CLI::Range(1, 64));
  app.add_option("--files", s.files, "files per volume")->check(CLI::Range(1, 10000));
  app.add_option("--file-kib", s.file_kib, "KiB per file")->check(CLI::Range(1, 1 << 20));
  app.add_option("--lease-seconds", s.lease_seconds, "backupd's lease_seconds")
      ->check(CLI::Range(1, 600));
  CLI11_PARSE(app, argc, argv);
  if (auto why = bkp::testutil::fuse_unavailable_reason()) {
    std::fprintf(stderr, "bkp_takeover_bench: %s\n", why->c_str());
    return 2;
  }
  try {
    return bkp::bench::run(s, BKP_BACKUPD_PATH, BKP_BACKUPFS_PATH, BKP_BKPTOOL_PATH);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bkp_takeover_bench: %s\n", e.what());
    return 1;
  }
}
