// bkp_scale_bench: the figures of bench/scale_out.sh (issue 16), measured on backupd's own code
// rather than through the daemons, so each compares one thing:
//
//   bkp_scale_bench catalog WHERE OPS
//     OPS rounds of what backupd does to its catalog per scheduled run (begin_run, record_run,
//     add_snapshot, the volume's last run and snapshots read back) on a catalog at WHERE (a
//     SQLite file or a PostgreSQL URI); prints "catalog_ops_per_s N" (statements' worth of
//     catalog calls per second: 5 per round).
//   bkp_scale_bench snapshot TREE LOCAL_DIR S3_ENV
//     one snapshot of TREE written to a directory on this disk, then the same cut to the bucket
//     of the radosgw in S3_ENV (tests/scale/ceph.sh's env file); prints "snapshot_local_s S",
//     "snapshot_s3_s S" and the archive's bytes.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "common/unique_fd.h"
#include "server/catalog.h"
#include "server/cut.h"
#include "server/s3_store.h"
#include "server/snapshot.h"
#include "tests/s3/s3_env.h"

namespace bkp::server {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int catalog(const std::string& where, int ops) {
  auto c = Catalog::open(where);
  if (!c) {
    std::fprintf(stderr, "%s\n", c.error().message.c_str());
    return 1;
  }
  Registration reg{"web1", "127.0.0.1", 7000, "/srv/app", 60, 1, "", 0};
  if (auto added = (*c)->add_registration(reg); !added && added.error().code != EEXIST) {
    std::fprintf(stderr, "%s\n", added.error().message.c_str());
    return 1;
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < ops; ++i) {
    const int64_t at = 1764552667047 + i * 1000;
    auto id = (*c)->begin_run("web1", "/srv/app", at);
    RunRecord run{.id = id.value_or(0), .host = "web1", .path = "/srv/app", .started_at = at,
                  .ended_at = at + 500, .status = RunStatus::kWritten,
                  .snapshot = snapshot_id_for(at), .snapshot_bytes = 1 << 20};
    SnapshotRecord snap{snapshot_id_for(at), 1 << 20, at, i, std::nullopt};
    if (!id || !(*c)->record_run(run) || !(*c)->add_snapshot("web1", "/srv/app", snap) ||
        !(*c)->last_run("web1", "/srv/app") || !(*c)->snapshots("web1", "/srv/app", false)) {
      std::fprintf(stderr, "a catalog call failed at round %d\n", i);
      return 1;
    }
  }
  std::printf("catalog_ops_per_s %.0f\n", 5.0 * ops / seconds_since(t0));
  return 0;
}

// Writes one archive of tree into store; prints its time under `label`.
int archive(const std::string& tree, const std::string& scratch, ArchiveStore& store,
            const std::string& label) {
  UniqueFd root(::open(tree.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root) return std::perror(tree.c_str()), 1;
  const auto t0 = std::chrono::steady_clock::now();
  auto cut = Cut::take(root.get(), -1, [](CutEntry&) {}, scratch);
  if (!cut) return std::fprintf(stderr, "%s\n", cut.error().message.c_str()), 1;
  auto snap = write_snapshot(**cut, store, snapshot_id_for(1764552667047), ArchiveOptions{});
  if (!snap) return std::fprintf(stderr, "%s: %s\n", label.c_str(), snap.error().message.c_str()), 1;
  std::printf("%s %.3f\nsnapshot_bytes %llu\n", label.c_str(), seconds_since(t0),
              static_cast<unsigned long long>(snap->bytes));
  return 0;
}

int snapshot(const std::string& tree, const std::string& local, const std::string& env_file) {
  std::string why;
  auto credentials = s3_credentials_in(env_file, &why);
  if (!credentials) return std::fprintf(stderr, "%s\n", why.c_str()), 1;
  LocalArchiveStore disk(local + "/archives");
  if (int rc = archive(tree, local + "/cut", disk, "snapshot_local_s")) return rc;
  S3Location location{"bench", ""};
  if (auto ready = prepare_bucket(*credentials, location); !ready) {
    return std::fprintf(stderr, "%s\n", ready.error().message.c_str()), 1;
  }
  S3ArchiveStore bucket(std::make_shared<const S3Credentials>(*credentials), location, "web1/srv");
  return archive(tree, local + "/cut", bucket, "snapshot_s3_s");
}

}  // namespace
}  // namespace bkp::server

int main(int argc, char** argv) {
  const std::string what = argc > 1 ? argv[1] : "";
  if (what == "catalog" && argc == 4) return bkp::server::catalog(argv[2], std::atoi(argv[3]));
  if (what == "snapshot" && argc == 5) return bkp::server::snapshot(argv[2], argv[3], argv[4]);
  std::fprintf(stderr,
               "usage: bkp_scale_bench catalog WHERE OPS | snapshot TREE LOCAL_DIR S3_ENV\n");
  return 2;
}
