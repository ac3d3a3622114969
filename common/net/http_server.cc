// HttpServer over cpp-httplib (http_server.h).
#include "common/net/http_server.h"

#include <httplib.h>

#include <atomic>
#include <thread>

#include "common/files.h"
#include "common/log.h"
#include "common/metrics.h"

namespace bkp::net {
namespace {

constexpr int kThreads = 2;
constexpr time_t kTimeoutSeconds = 5;
constexpr size_t kMaxRequestBody = 0;  // GET only: any body is refused

}  // namespace

struct HttpServer::Impl {
  httplib::Server server;
  std::atomic<bool> ended{false};
  std::thread thread;
};

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() {
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

Result<std::unique_ptr<HttpServer>> HttpServer::start(const HostPort& where,
                                                      std::map<std::string, Handler> routes,
                                                      HostPort* bound) {
  auto impl = std::make_unique<Impl>();
  httplib::Server& s = impl->server;
  s.new_task_queue = [] { return new httplib::ThreadPool(kThreads); };
  s.set_read_timeout(kTimeoutSeconds, 0);
  s.set_write_timeout(kTimeoutSeconds, 0);
  s.set_keep_alive_timeout(kTimeoutSeconds);
  s.set_payload_max_length(kMaxRequestBody);
  for (auto& [path, handler] : routes) {
    s.Get(path, [handler = std::move(handler)](const httplib::Request&, httplib::Response& res) {
      HttpResponse r = handler();
      res.status = r.status;
      res.set_header("Cache-Control", "no-store");
      res.set_header("X-Content-Type-Options", "nosniff");
      res.set_content(std::move(r.body), r.content_type.c_str());
    });
  }
  int port = where.port;
  if (port == 0) {
    port = s.bind_to_any_port(where.host);
  } else if (!s.bind_to_port(where.host, port)) {
    port = -1;
  }
  if (port <= 0) {
    return fail(EADDRINUSE, "cannot listen for HTTP on " + where.host + ":" +
                                std::to_string(where.port) + " (in use, or not a local address)");
  }
  if (bound != nullptr) *bound = HostPort{where.host, static_cast<uint16_t>(port)};
  impl->thread = std::thread([&s, ended = &impl->ended] {
    if (!s.listen_after_bind()) log::warn("HTTP server stopped listening");
    ended->store(true);
  });
  // stop() only ends a loop that runs: wait for it, so destroying the server never hangs.
  while (!s.is_running() && !impl->ended.load()) std::this_thread::yield();
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

std::unique_ptr<HttpServer> serve_metrics(const HostPort& where, const std::string& port_file,
                                          std::function<std::string()> text) {
  HostPort bound;
  auto started = HttpServer::start(
      where,
      {{"/metrics",
        [text = std::move(text)] {
          return HttpResponse{200, metrics::kContentType, text()};
        }}},
      &bound);
  if (!started) {
    log::error("--metrics-listen: {}", started.error().message);
    return nullptr;
  }
  log::info("metrics on http://{}:{}/metrics", bound.host, bound.port);
  if (!port_file.empty()) {
    if (auto w = write_file_atomic(port_file, std::to_string(bound.port) + "\n",
                                   Durability::kNoSync);
        !w) {
      log::error("--metrics-port-file: {}", w.error().message);
    }
  }
  return std::move(*started);
}

}  // namespace bkp::net
