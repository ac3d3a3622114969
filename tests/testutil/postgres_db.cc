// Test databases on the test PostgreSQL server (postgres_db.h), over libpq directly: the test
// harness must not depend on the code under test (server/postgres.h) to set itself up. A
// database per test rather than a schema per test, since the catalog's SQL names no schema;
// CREATE DATABASE on an idle test server takes a few milliseconds.
#include "tests/testutil/postgres_db.h"

#include <libpq-fe.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>

#include "tests/testutil/files.h"

namespace bkp::testutil {
namespace {

constexpr const char* kUrlKey = "BKP_TEST_POSTGRES_URL";

// Runs one statement on a connection of its own.
Result<void> run(const std::string& url, const std::string& sql) {
  std::unique_ptr<PGconn, void (*)(PGconn*)> conn(PQconnectdb(url.c_str()), PQfinish);
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    return fail(ECONNREFUSED, fmt::format("test server {}: {}", url, PQerrorMessage(conn.get())));
  }
  std::unique_ptr<PGresult, void (*)(PGresult*)> r(PQexec(conn.get(), sql.c_str()), PQclear);
  if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
    return fail(EIO, fmt::format("test server {}: {}: {}", url, sql, PQerrorMessage(conn.get())));
  }
  return {};
}

// The URL with its database replaced by `database`.
std::string with_database(const std::string& url, const std::string& database) {
  size_t authority = url.find("://") + 3;
  size_t end = std::min(url.find('?', authority), url.size());  // of the path
  size_t path = std::min(url.find('/', authority), end);
  return url.substr(0, path) + "/" + database + url.substr(end);
}

}  // namespace

Result<std::optional<std::string>> PostgresDb::server_url() {
  if (const char* url = std::getenv(kUrlKey); url != nullptr && *url != '\0') {
    return std::optional<std::string>(url);
  }
  const char* env = std::getenv("BKP_TEST_POSTGRES_ENV");
  if (env == nullptr) return std::optional<std::string>();
  auto values = read_env_file(env);
  if (values && values->contains(kUrlKey)) return std::optional<std::string>(values->at(kUrlKey));
  return fail(ENOENT, fmt::format("{} holds no {}: did the CTest fixture postgres_start fail?", env,
                                  kUrlKey));
}

Result<std::unique_ptr<PostgresDb>> PostgresDb::create(const std::string& server_url) {
  static std::atomic<int> counter{0};
  std::string name = fmt::format("bkp_test_{}_{}", ::getpid(), counter++);
  BKP_TRY_VOID(run(server_url, "CREATE DATABASE " + name));
  std::string url = with_database(server_url, name);
  return std::unique_ptr<PostgresDb>(new PostgresDb(server_url, name, url));
}

Result<std::unique_ptr<PostgresDb>> PostgresDb::for_test() {
  auto server = BKP_TRY(server_url());
  if (!server) return std::unique_ptr<PostgresDb>();
  return create(*server);
}

PostgresDb::~PostgresDb() {
  // FORCE: a catalog that a failed assertion left open must not keep the database.
  if (auto dropped =
          run(server_url_, fmt::format("DROP DATABASE IF EXISTS {} WITH (FORCE)", name_));
      !dropped) {
    std::fprintf(stderr, "%s\n", dropped.error().message.c_str());
  }
}

}  // namespace bkp::testutil
