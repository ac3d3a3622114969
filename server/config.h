// backupd's settings: command-line flags over an optional TOML file over defaults.
//
// The TOML file (--config FILE) accepts exactly these keys; any other key is an error:
//   listen              string   "ADDR:PORT" to listen on for replicas and bkptool
//                                (default "0.0.0.0:7700"; --listen overrides)
//   state_dir           string   the state directory (required unless --state-dir is given,
//                                which overrides it)
//   catalog             string   a PostgreSQL URI ("postgresql://user@host:port/db" or
//                                "postgres://..."), to keep the catalog there, shared by
//                                several backupd instances; default: SQLite at
//                                STATE/catalog.db
//   server_name         string   this backupd's name among those sharing the catalog (required
//                                with `catalog`, unique, stable across restarts): volumes are
//                                leased to servers by name (server/leases.h)
//   lease_seconds       integer  how long a volume's lease lasts unrenewed, 3..3600 (default
//                                30): a server that stops renewing loses its volumes to the
//                                others after this long
//   snapshot_gzip_level integer  gzip level of snapshot archives, 1 (fastest, default) to 9
//   snapshot_threads    integer  threads compressing a snapshot, at nice +10; 0 (default): one
//                                per online CPU
//   keep_snapshots      integer  snapshots kept per volume, the newest ones; default 10, >= 1
//   copies              integer  copies of each volume that names none at register (the mirror
//                                included: 3 = the mirror and 2 replicas), 1 to 16; default 3
//   replica_grace_seconds integer how long a replicator holding copies may be away before they
//                                are placed elsewhere (server/placement.h); default 600, >= 1
//   tls                 boolean  TLS 1.3 with identities on every connection (default true);
//                                false only for a trusted loopback benchmark (--no-tls too)
//   control_socket      string   the Unix socket of local bkptool control, no TLS: its file
//                                mode (0660) is the credential (default
//                                "/run/backupd/control.sock"; --control-socket overrides)
//   control_group       string   group owning the control socket, whose members may use it
//                                besides root (optional, default backupd's own group; an
//                                unknown group is a config error)
//   max_queued_ops      integer  operations kept per replica and volume while the replica is
//                                away (default 131072, ~30 MiB); past it they are dropped and
//                                the replica is reconciled by manifest when it returns
//   forward_cache_mib   integer  memory for the node's write frames kept to forward to the
//                                replicas as they came (server/forward_cache.h), all volumes
//                                together (at most 128 MiB for one); default 256, 0: none
//   http_listen         string   "ADDR:PORT" of the status page, /api/status and /metrics
//                                (server/web.h; default "127.0.0.1:7780", "off": none;
//                                --http-listen overrides). Plain HTTP without authentication:
//                                keep it on loopback unless the network is trusted
//   verify_every_seconds integer verify every registered volume this often (server/verify.h:
//                                the node, the replicas and the snapshots; 0, the default: never)
//   verify_read_data    boolean  scheduled verifies compare file contents too (default false)
//   snapshot_store      string   "s3://BUCKET[/PREFIX]": snapshot archives go to this bucket of
//                                an S3-compatible store (server/s3_store.h) instead of each
//                                volume's directory; the bucket is created if missing
//   snapshot_store_credentials string  the store's endpoint, region and keys (TOML: endpoint,
//                                region, access_key, secret_key), a file of mode 0600 owned by
//                                backupd's user; required with snapshot_store
// Example:
//   listen = "0.0.0.0:7700"
//   state_dir = "/var/lib/backupd"
//   snapshot_gzip_level = 1
//   keep_snapshots = 10
//   control_group = "backup"
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>

#include "common/changes/change_log.h"
#include "common/net/socket.h"
#include "common/result.h"
#include "server/forward_cache.h"
#include "server/s3_config.h"

namespace bkp::server {

constexpr int kExitUsage = 2;    // bad flags
constexpr int kExitConfig = 78;  // EX_CONFIG: bad configuration file, the message names the key
constexpr const char* kDefaultControlSocket = "/run/backupd/control.sock";

// What the command line said; empty strings mean "not given".
struct Options {
  std::string state_dir;
  std::string config_file;
  std::string listen;
  std::string port_file;
  std::string progress_every;  // seconds
  std::string control_socket;
  std::string http_listen;     // "ADDR:PORT" or "off"
  std::string http_port_file;  // where to write the bound HTTP port
  bool no_tls = false;
  bool show_id = false;  // --show-id: print the identity and exit
};

struct Settings {
  std::string state_dir;
  std::string catalog;  // a PostgreSQL URI; "": SQLite at STATE/catalog.db (catalog_location)
  std::string server_name;  // with catalog: this server's name for leases
  int lease_seconds = 30;
  net::HostPort listen{"0.0.0.0", 7700};
  std::string port_file;
  int snapshot_gzip_level = 1;
  int snapshot_threads = 0;  // 0: one per online CPU
  int keep_snapshots = 10;
  int copies = 3;  // server/placement.h kDefaultCopies
  int replica_grace_seconds = 600;  // server/placement.h kDefaultReplicaGraceSeconds
  std::chrono::milliseconds progress_every{std::chrono::seconds(10)};
  bool tls = true;
  std::string control_socket = kDefaultControlSocket;
  std::string control_group;            // "" when not set
  std::optional<gid_t> control_gid;     // control_group's id, looked up when loading
  int max_queued_ops = static_cast<int>(changes::kMaxQueuedOps);  // each replica log's bound
  int forward_cache_mib = static_cast<int>(kForwardBudgetBytes >> 20);  // all volumes together
  std::optional<net::HostPort> http_listen = net::HostPort{"127.0.0.1", 7780};  // none: off
  std::string http_port_file;
  int verify_every_seconds = 0;  // 0: no scheduled verify (server/verify_schedule.h)
  bool verify_read_data = false;
  std::optional<S3Location> snapshot_store;  // none: the volume directories
  std::optional<S3Credentials> snapshot_store_credentials;  // with snapshot_store
};

// An http_listen value: "ADDR:PORT", or "off" (nullopt).
Result<std::optional<net::HostPort>> parse_http_listen(std::string_view text);

// Where the catalog is: the PostgreSQL URI, or STATE/catalog.db (Catalog::open).
std::string catalog_location(const Settings& settings);

// STATE/identity.pem: backupd's key pair and certificate (common/net/identity.h).
std::string identity_path(const std::string& state_dir);

// Reads the config file if one is given (keys above) and applies the flags over it.
// Errors name the file and the key (a control_group that names no group too); the caller exits
// kExitConfig. Flags are assumed valid (main
// checks them and exits kExitUsage).
Result<Settings> load_settings(const Options& options);

}  // namespace bkp::server
