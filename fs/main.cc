// backupfs DIR --listen [ADDR:]PORT --server-id ID... [--port-file FILE] [--host NAME]
//          [--state-dir DIR] [--server-ids FILE] [--no-tls] [--progress-every SECONDS]
//          [--max-queued-ops N] [-f] [-v|-q]
// backupfs --show-id [--state-dir DIR]
// backupfs --version
//
// Parses the command line and hands over to run(); bad flags exit 2 with a message. The keeper
// (keeper.h) runs the same command line again for each worker, with --worker=FDS added.
// Everything else, including errors found later, is run()'s.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "common/net/identity.h"
#include "common/net/socket.h"
#include "common/path.h"
#include "common/process.h"
#include "common/progress.h"
#include "common/version.h"
#include "fs/run.h"

namespace {

constexpr const char* kUsage =
    "usage: backupfs DIR --listen [ADDR:]PORT --server-id ID... [--port-file FILE]\n"
    "                [--host NAME] [--state-dir DIR] [--server-ids FILE] [--no-tls]\n"
    "                [--progress-every SECONDS] [--max-queued-ops N]\n"
    "                [--metrics-listen ADDR:PORT [--metrics-port-file FILE]] [-f] [-v|-q]\n"
    "       backupfs --show-id [--state-dir DIR]\n"
    "       backupfs --version\n"
    "  Mounts itself over DIR, records every change and streams it to the backupd that\n"
    "  attaches at the port (`bkptool register ADDRESS PORT DIR` tells backupd to).\n"
    "  --listen [ADDR:]PORT  where backupd connects (ADDR default 0.0.0.0; port 0: any free)\n"
    "  --port-file FILE      write the bound port there, in decimal, once listening\n"
    "  --host NAME           names the volume on backupd, NAME:DIR (default: this machine's\n"
    "                        host name)\n"
    "  --server-id ID        a backupd identity this node serves (`backupd --show-id` prints\n"
    "                        it); repeatable. Any other backupd is refused\n"
    "  --server-ids FILE     more of them, one per line ('#' comments)\n"
    "  --state-dir DIR       where this node keeps its identity (default /var/lib/backupfs)\n"
    "  --show-id             print this node's identity (for bkptool register --node-id)\n"
    "  --no-tls              plaintext, unauthenticated: for a trusted loopback benchmark only\n"
    "  --progress-every SECS while shipping, a status line this often when stderr is not a\n"
    "                        terminal (default 10; on a terminal a progress bar is drawn)\n"
    "  --max-queued-ops N    operations kept for backupd while none drains them (default\n"
    "                        131072, ~30 MiB); past it they are dropped and the next attach\n"
    "                        reconciles by manifest instead\n"
    "  --metrics-listen ADDR:PORT  serve Prometheus metrics at http://ADDR:PORT/metrics (the\n"
    "                        node's lag, what it shipped; plain HTTP: keep it on loopback)\n"
    "  --metrics-port-file FILE  write that port there once listening\n"
    "  -f                    stay in the foreground\n"
    "  -v / -q               debug / warnings-only logging\n";

int bad(const std::string& message) {
  std::fprintf(stderr, "backupfs: %s\n%s", message.c_str(), kUsage);
  return 2;
}

// "[ADDR:]PORT": a bare port listens on every IPv4 address.
bkp::Result<bkp::net::HostPort> parse_listen(std::string_view text) {
  if (text.find(':') != std::string_view::npos) return bkp::net::parse_host_port(text);
  return bkp::net::parse_host_port("0.0.0.0:" + std::string(text));
}

}  // namespace

int main(int argc, char** argv) {
  bkp::tune_allocator();
  bkp::fs::Options options;
  options.args.assign(argv + 1, argv + argc);
  std::string listen;
  bool show_id = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    auto value = [&](std::string_view flag, std::string* out) {
      if (arg == flag) {
        if (i + 1 >= argc) return false;
        *out = argv[++i];
        return true;
      }
      *out = std::string(arg.substr(flag.size() + 1));
      return true;
    };
    auto is_flag = [&](std::string_view flag) {
      return arg == flag || (arg.size() > flag.size() && arg.substr(0, flag.size()) == flag &&
                             arg[flag.size()] == '=');
    };
    if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (arg == "--version") {
      std::puts(bkp::version_text("backupfs").c_str());
      return 0;
    } else if (is_flag("--listen")) {
      if (!value("--listen", &listen) || listen.empty()) return bad("--listen needs [ADDR:]PORT");
    } else if (is_flag("--server-id")) {
      std::string text;
      if (!value("--server-id", &text)) return bad("--server-id needs ID");
      auto id = bkp::net::parse_id(text);
      if (!id) return bad("--server-id: " + id.error().message);
      options.server_ids.push_back(*id);
    } else if (is_flag("--server-ids")) {
      if (!value("--server-ids", &options.server_ids_file) || options.server_ids_file.empty()) {
        return bad("--server-ids needs FILE");
      }
    } else if (is_flag("--state-dir")) {
      if (!value("--state-dir", &options.state_dir) || options.state_dir.empty()) {
        return bad("--state-dir needs DIR");
      }
    } else if (arg == "--show-id") {
      show_id = true;
    } else if (arg == "--no-tls") {
      options.tls = false;
    } else if (is_flag("--port-file")) {
      if (!value("--port-file", &options.port_file) || options.port_file.empty()) {
        return bad("--port-file needs FILE");
      }
    } else if (is_flag("--host")) {
      if (!value("--host", &options.host) || options.host.empty()) return bad("--host needs NAME");
    } else if (is_flag("--progress-every")) {
      std::string every;
      if (!value("--progress-every", &every)) return bad("--progress-every needs SECONDS");
      auto parsed = bkp::progress::parse_every(every);
      if (!parsed) return bad("--progress-every: " + parsed.error().message);
      options.progress_every = *parsed;
    } else if (is_flag("--max-queued-ops")) {
      std::string text;
      if (!value("--max-queued-ops", &text)) return bad("--max-queued-ops needs N");
      char* end = nullptr;
      errno = 0;
      unsigned long long n = std::strtoull(text.c_str(), &end, 10);
      if (text.empty() || *end != '\0' || errno != 0 || n < 1 || text[0] == '-') {
        return bad("--max-queued-ops: not a positive number: " + text);
      }
      options.max_queued_ops = static_cast<size_t>(n);
    } else if (is_flag("--metrics-listen")) {
      std::string text;
      if (!value("--metrics-listen", &text)) return bad("--metrics-listen needs ADDR:PORT");
      auto where = bkp::net::parse_host_port(text);
      if (!where) return bad("--metrics-listen: " + where.error().message);
      options.metrics_listen = *where;
    } else if (is_flag("--metrics-port-file")) {
      if (!value("--metrics-port-file", &options.metrics_port_file) ||
          options.metrics_port_file.empty()) {
        return bad("--metrics-port-file needs FILE");
      }
    } else if (is_flag("--worker")) {  // the keeper's, with the descriptors it passes on
      if (!value("--worker", &options.worker) || options.worker.empty()) {
        return bad("--worker needs descriptors");
      }
    } else if (arg == "-f") {
      options.foreground = true;
    } else if (arg == "-v") {
      options.level = bkp::log::Level::kDebug;
    } else if (arg == "-q") {
      options.level = bkp::log::Level::kWarn;
    } else if (!arg.empty() && arg[0] == '-') {
      return bad("unknown flag " + std::string(arg));
    } else if (options.dir.empty()) {
      options.dir = arg;
    } else {
      return bad("more than one directory given");
    }
  }
  if (show_id) return bkp::fs::show_id(options);
  if (options.dir.empty()) return bad("DIR is required");
  if (listen.empty()) return bad("--listen is required");
  auto where = parse_listen(listen);
  if (!where) return bad("--listen: " + where.error().message);
  options.listen = *where;
  if (!options.host.empty()) {
    if (auto ok = bkp::validate_host(options.host); !ok) return bad("--host: " + ok.error().message);
  }
  if (options.tls && options.server_ids.empty() && options.server_ids_file.empty()) {
    return bad("--server-id is required: the identity of the backupd this node serves "
               "(`backupd --show-id` on the server prints it)");
  }
  return bkp::fs::run(options);
}
