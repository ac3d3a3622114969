// backupd: parses the command line and hands over to bkp::server::run().
#include <getopt.h>

#include <cstdio>
#include <exception>

#include "common/log.h"
#include "common/net/socket.h"
#include "common/process.h"
#include "common/progress.h"
#include "common/version.h"
#include "server/server.h"

namespace {

void usage(FILE* out) {
  std::fputs(
      "usage: backupd --state-dir DIR [--config FILE] [--listen ADDR:PORT] [--port-file FILE] "
      "[--progress-every SECONDS] [--control-socket PATH] [--http-listen ADDR:PORT|off] "
      "[--http-port-file FILE] [--no-tls] [-v|-q]\n"
      "       backupd --state-dir DIR --show-id   (prints backupd's identity, making it if "
      "needed)\n"
      "       backupd --version\n",
      out);
}

}  // namespace

int main(int argc, char** argv) {
  using bkp::server::kExitUsage;
  bkp::tune_allocator();
  bkp::server::Options options;
  const option longopts[] = {
      {"state-dir", required_argument, nullptr, 's'}, {"config", required_argument, nullptr, 'c'},
      {"listen", required_argument, nullptr, 'l'},    {"port-file", required_argument, nullptr, 'p'},
      {"progress-every", required_argument, nullptr, 'e'},
      {"control-socket", required_argument, nullptr, 'S'},
      {"http-listen", required_argument, nullptr, 'H'},
      {"http-port-file", required_argument, nullptr, 'P'},
      {"no-tls", no_argument, nullptr, 'T'},         {"show-id", no_argument, nullptr, 'I'},
      {"verbose", no_argument, nullptr, 'v'},         {"quiet", no_argument, nullptr, 'q'},
      {"help", no_argument, nullptr, 'h'},            {"version", no_argument, nullptr, 'V'},
      {nullptr, 0, nullptr, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "vqh", longopts, nullptr)) != -1) {
    switch (c) {
      case 's': options.state_dir = optarg; break;
      case 'c': options.config_file = optarg; break;
      case 'l': options.listen = optarg; break;
      case 'p': options.port_file = optarg; break;
      case 'e': options.progress_every = optarg; break;
      case 'S':
        if (*optarg == '\0') {
          std::fputs("backupd: --control-socket: the path is empty\n", stderr);
          return kExitUsage;
        }
        options.control_socket = optarg;
        break;
      case 'H': options.http_listen = optarg; break;
      case 'P': options.http_port_file = optarg; break;
      case 'T': options.no_tls = true; break;
      case 'I': options.show_id = true; break;
      case 'v': bkp::log::set_level(bkp::log::Level::kDebug); break;
      case 'q': bkp::log::set_level(bkp::log::Level::kWarn); break;
      case 'h': usage(stdout); return 0;
      case 'V': std::puts(bkp::version_text("backupd").c_str()); return 0;
      default: usage(stderr); return kExitUsage;
    }
  }
  if (optind != argc) {
    std::fprintf(stderr, "backupd: unexpected argument '%s'\n", argv[optind]);
    usage(stderr);
    return kExitUsage;
  }
  if (options.state_dir.empty() && options.config_file.empty()) {
    std::fputs("backupd: --state-dir is required\n", stderr);
    usage(stderr);
    return kExitUsage;
  }
  if (!options.listen.empty()) {
    if (auto hp = bkp::net::parse_host_port(options.listen); !hp) {
      std::fprintf(stderr, "backupd: --listen: %s\n", hp.error().message.c_str());
      return kExitUsage;
    }
  }
  if (!options.http_listen.empty()) {
    if (auto hp = bkp::server::parse_http_listen(options.http_listen); !hp) {
      std::fprintf(stderr, "backupd: --http-listen: %s\n", hp.error().message.c_str());
      return kExitUsage;
    }
  }
  if (!options.progress_every.empty()) {
    if (auto e = bkp::progress::parse_every(options.progress_every); !e) {
      std::fprintf(stderr, "backupd: --progress-every: %s\n", e.error().message.c_str());
      return kExitUsage;
    }
  }
  try {
    return bkp::server::run(options);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "backupd: internal error: %s\n", e.what());
    return 1;
  }
}
