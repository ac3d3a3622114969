// replicator: parses the command line and hands over to bkp::replicator::run().
#include <getopt.h>
#include <unistd.h>

#include <cstdio>
#include <exception>
#include <string>

#include "common/log.h"
#include "common/net/socket.h"
#include "common/path.h"
#include "common/process.h"
#include "common/progress.h"
#include "replicator/replicator.h"

namespace {

void usage(FILE* out) {
  std::fputs("usage: replicator --server ADDR:PORT --root DIR [--name NAME] [--progress-every SECONDS] "
      "[-v|-q]\n", out);
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
      {nullptr, 0, nullptr, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "vqh", longopts, nullptr)) != -1) {
    switch (c) {
      case 's': options.server = optarg; break;
      case 'r': options.root = optarg; break;
      case 'n': options.name = optarg; break;
      case 'e': {
        auto every = bkp::progress::parse_every(optarg);
        if (!every) {
          std::fprintf(stderr, "replicator: --progress-every: %s\n", every.error().message.c_str());
          return kExitUsage;
        }
        options.progress_every = *every;
        break;
      }
      case 'v': bkp::log::set_level(bkp::log::Level::kDebug); break;
      case 'q': bkp::log::set_level(bkp::log::Level::kWarn); break;
      case 'h': usage(stdout); return 0;
      default: usage(stderr); return kExitUsage;
    }
  }
  if (optind != argc) {
    std::fprintf(stderr, "replicator: unexpected argument '%s'\n", argv[optind]);
    usage(stderr);
    return kExitUsage;
  }
  if (options.server.empty() || options.root.empty()) {
    std::fputs("replicator: --server and --root are required\n", stderr);
    usage(stderr);
    return kExitUsage;
  }
  if (auto hp = bkp::net::parse_host_port(options.server); !hp) {
    std::fprintf(stderr, "replicator: --server: %s\n", hp.error().message.c_str());
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
