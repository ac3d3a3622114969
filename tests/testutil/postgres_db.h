// PostgresDb: a database of its own, for one test, on the PostgreSQL server that
// tests/scale/postgres.sh started (CTest's `postgres` fixture, tests/CMakeLists.txt), dropped
// when the test ends, so tests sharing the server never see each other's rows.
//
// The server is found through BKP_TEST_POSTGRES_URL, or else the env file named by
// BKP_TEST_POSTGRES_ENV (the fixture's, holding a BKP_TEST_POSTGRES_URL= line). Neither set: a
// test run by hand without a server, which skips. The env file named but holding no URL: the
// fixture failed, which is an error, not a reason to skip.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "common/result.h"

namespace bkp::testutil {

class PostgresDb {
 public:
  // The server's URL (its maintenance database); nullopt when no server was given.
  static Result<std::optional<std::string>> server_url();
  // Creates bkp_test_<pid>_<n> on the server at `server_url`.
  static Result<std::unique_ptr<PostgresDb>> create(const std::string& server_url);
  // The same on the test server (server_url()); null when none was given: skip with
  // kNoPostgresServer.
  static Result<std::unique_ptr<PostgresDb>> for_test();
  // Drops the database, ending any session still on it.
  ~PostgresDb();
  PostgresDb(const PostgresDb&) = delete;
  PostgresDb& operator=(const PostgresDb&) = delete;

  // postgresql://... of the test's database.
  const std::string& url() const { return url_; }

 private:
  PostgresDb(std::string server_url, std::string name, std::string url)
      : server_url_(std::move(server_url)), name_(std::move(name)), url_(std::move(url)) {}
  std::string server_url_, name_, url_;
};

// How a test without a server skips: what to run to give it one.
constexpr const char* kNoPostgresServer =
    "no PostgreSQL server for this test: run it under ctest, or `tests/scale/postgres.sh start "
    "DIR` and export BKP_TEST_POSTGRES_URL from DIR/env";

}  // namespace bkp::testutil
