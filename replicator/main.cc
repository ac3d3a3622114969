// replicator: parses the command line and hands over to bkp::replicator::run().
#include <getopt.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <string>
#include <utility>

#include "common/log.h"
#include "common/net/identity.h"
#include "common/net/socket.h"
#include "common/path.h"
#include "common/process.h"
#include "common/progress.h"
#include "common/version.h"
#include "replicator/replicator.h"

namespace {

void usage(FILE* out) {
  std::fputs("usage: replicator --server ADDR:PORT [--server ADDR:PORT ...]\n"
             "                  --server-id ID [--server-id ID ...] --root DIR [--name NAME]\n"
             "                  [--capacity SIZE] [--progress-every SECONDS] [--no-tls]\n"
             "                  [--metrics-listen ADDR:PORT [--metrics-port-file FILE]]\n"
             "                  [--listen ADDR:PORT [--listen-port-file FILE]\n"
             "                   --operator-id ID [--operator-id ID ...]] [-v|-q]\n"
             "       replicator --root DIR --show-id   (prints this replicator's identity, for\n"
             "                  `bkptool replica add` on the server)\n"
             "       replicator --version\n"
             "--server once per backupd to follow (several servers on one catalog: every one, so a\n"
             "volume that moves is followed); --server-id once per identity accepted, from any.\n",
             out);
}

// Stores a flag's parsed value in *out; false, after saying why, if it did not parse.
template <typename T, typename Out>
bool parsed(const char* flag, bkp::Result<T> value, Out* out) {
  if (!value) {
    std::fprintf(stderr, "replicator: %s: %s\n", flag, value.error().message.c_str());
    return false;
  }
  *out = std::move(*value);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  using bkp::replicator::kExitUsage;
  bkp::tune_allocator();
  bkp::replicator::Options options;
  const option longopts[] = {
      {"server", required_argument, nullptr, 's'}, {"root", required_argument, nullptr, 'r'},
      {"name", required_argument, nullptr, 'n'},   {"verbose", no_argument, nullptr, 'v'},
      {"progress-every", required_argument, nullptr, 'e'},
      {"quiet", no_argument, nullptr, 'q'},        {"help", no_argument, nullptr, 'h'},
      {"server-id", required_argument, nullptr, 'i'}, {"show-id", no_argument, nullptr, 'I'},
      {"no-tls", no_argument, nullptr, 'T'},       {"version", no_argument, nullptr, 'V'},
      {"capacity", required_argument, nullptr, 'c'},
      {"metrics-listen", required_argument, nullptr, 'm'},
      {"metrics-port-file", required_argument, nullptr, 'M'},
      {"listen", required_argument, nullptr, 'l'},
      {"listen-port-file", required_argument, nullptr, 'L'},
      {"operator-id", required_argument, nullptr, 'o'},
      {nullptr, 0, nullptr, 0}};
  bool show_id = false;
  int c;
  while ((c = getopt_long(argc, argv, "vqh", longopts, nullptr)) != -1) {
    switch (c) {
      case 's': {
        if (auto hp = bkp::net::parse_host_port(optarg); !hp) {
          std::fprintf(stderr, "replicator: --server: %s\n", hp.error().message.c_str());
          return kExitUsage;
        }
        if (std::find(options.servers.begin(), options.servers.end(), optarg) !=
            options.servers.end()) {
          std::fprintf(stderr, "replicator: --server %s is given twice\n", optarg);
          return kExitUsage;
        }
        options.servers.emplace_back(optarg);
        break;
      }
      case 'r': options.root = optarg; break;
      case 'n': options.name = optarg; break;
      case 'i': {
        std::string id;
        if (!parsed("--server-id", bkp::net::parse_id(optarg), &id)) return kExitUsage;
        options.server_ids.push_back(id);
        break;
      }
      case 'm':
        if (!parsed("--metrics-listen", bkp::net::parse_host_port(optarg),
                    &options.metrics_listen)) {
          return kExitUsage;
        }
        break;
      case 'M': options.metrics_port_file = optarg; break;
      case 'l':
        if (!parsed("--listen", bkp::net::parse_host_port(optarg), &options.listen)) {
          return kExitUsage;
        }
        break;
      case 'L': options.listen_port_file = optarg; break;
      case 'o': {
        std::string id;
        if (!parsed("--operator-id", bkp::net::parse_id(optarg), &id)) return kExitUsage;
        options.operator_ids.push_back(id);
        break;
      }
      case 'I': show_id = true; break;
      case 'c':
        if (!parsed("--capacity", bkp::progress::parse_bytes(optarg), &options.capacity)) {
          return kExitUsage;
        }
        break;
      case 'T': options.tls = false; break;
      case 'e':
        if (!parsed("--progress-every", bkp::progress::parse_every(optarg),
                    &options.progress_every)) {
          return kExitUsage;
        }
        break;
      case 'v': bkp::log::set_level(bkp::log::Level::kDebug); break;
      case 'q': bkp::log::set_level(bkp::log::Level::kWarn); break;
      case 'h': usage(stdout); return 0;
      case 'V': std::puts(bkp::version_text("replicator").c_str()); return 0;
      default: usage(stderr); return kExitUsage;
    }
  }
  if (optind != argc) {
    std::fprintf(stderr, "replicator: unexpected argument '%s'\n", argv[optind]);
    usage(stderr);
    return kExitUsage;
  }
  if (show_id && !options.root.empty()) return bkp::replicator::show_id(options.root);
  if (options.servers.empty() || options.root.empty()) {
    std::fputs("replicator: --server and --root are required\n", stderr);
    usage(stderr);
    return kExitUsage;
  }
  if (options.tls && options.server_ids.empty()) {
    std::fputs("replicator: --server-id is required: the identity of each backupd (`backupd "
               "--show-id` on the server prints it)\n", stderr);
    return kExitUsage;
  }
  if (options.listen && (options.operator_ids.empty() || !options.tls)) {
    std::fputs("replicator: --listen needs TLS and at least one --operator-id: the identity of "
               "each bkptool that may restore from this replica (`bkptool --show-id` prints it)\n",
               stderr);
    return kExitUsage;
  }
  if (options.name.empty()) {
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    options.name = host;
  }
  if (auto ok = bkp::validate_host(options.name); !ok) {
    std::fprintf(stderr, "replicator: --name: %s\n", ok.error().message.c_str());
    return kExitUsage;
  }
  try {
    return bkp::replicator::run(options);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "replicator: internal error: %s\n", e.what());
    return 1;
  }
}
