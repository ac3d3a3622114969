// HttpServer: a small read-only HTTP endpoint for what operators point a browser or Prometheus
// at (backupd's status page and /metrics, the daemons' --metrics-listen). GET and HEAD only,
// plain HTTP (the default binding is loopback; README says how to expose it), served by
// cpp-httplib on a pool of two threads with short timeouts, so a slow or hostile client costs
// one of them for a few seconds and never the daemon's own work.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "common/net/socket.h"
#include "common/result.h"

namespace bkp::net {

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

class HttpServer {
 public:
  // Answers GET of one path (the query string is not passed: the endpoints take none).
  using Handler = std::function<HttpResponse()>;

  // Binds where (port 0: any free port; the bound address in *bound) and serves routes (path
  // -> handler; anything else 404) on threads of its own until destroyed.
  static Result<std::unique_ptr<HttpServer>> start(const HostPort& where,
                                                   std::map<std::string, Handler> routes,
                                                   HostPort* bound);
  ~HttpServer();  // stops serving and joins its threads
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

 private:
  struct Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// A daemon's --metrics-listen: serves GET /metrics (the body from text(), called per request on
// the server's threads) on where, logs the address, and writes the bound port in decimal to
// port_file unless it is empty. Metrics are for monitoring, not for the daemon's work: a port
// that cannot be had is logged as an error and gives null, and the daemon goes on without them.
std::unique_ptr<HttpServer> serve_metrics(const HostPort& where, const std::string& port_file,
                                          std::function<std::string()> text);

}  // namespace bkp::net
