// The per-engine catalog fixture (catalog_engine.h). A database per test rather than a schema
// per test: the catalog's SQL names no schema, and CREATE DATABASE on an idle test server takes
// a few milliseconds.
#include "tests/unit/server/catalog_engine.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <fstream>

#include <fmt/format.h>

namespace bkp::server {
namespace {

constexpr const char* kUrlKey = "BKP_TEST_POSTGRES_URL";

// The URL with its database replaced by `database`.
std::string with_database(const std::string& url, const std::string& database) {
  size_t authority = url.find("://") + 3;
  size_t end = std::min(url.find('?', authority), url.size());  // of the path
  size_t path = std::min(url.find('/', authority), end);
  return url.substr(0, path) + "/" + database + url.substr(end);
}

}  // namespace

std::string catalog_engine_name(const ::testing::TestParamInfo<Database::Engine>& info) {
  return info.param == Database::Engine::kSqlite ? "sqlite" : "postgres";
}

void CatalogEngineTest::SetUp() {
  if (GetParam() == Database::Engine::kSqlite) {
    where_ = tmp_.sub("catalog.db");
    return;
  }
  if (const char* url = std::getenv(kUrlKey); url != nullptr && *url != '\0') {
    server_url_ = url;
  } else if (const char* env = std::getenv("BKP_TEST_POSTGRES_ENV"); env != nullptr) {
    std::ifstream in(env);
    for (std::string line; std::getline(in, line);) {
      if (line.starts_with(std::string(kUrlKey) + "=")) server_url_ = line.substr(line.find('=') + 1);
    }
    ASSERT_FALSE(server_url_.empty())
        << env << " holds no " << kUrlKey << ": did the CTest fixture postgres_start fail?";
  } else {
    GTEST_SKIP() << "no PostgreSQL server for the catalog tests: run them under ctest, or "
                    "`tests/scale/postgres.sh start DIR` and export BKP_TEST_POSTGRES_URL from "
                    "DIR/env";
  }
  static std::atomic<int> counter{0};
  database_ = fmt::format("bkp_test_{}_{}", ::getpid(), counter++);
  auto admin = Database::open(server_url_);
  ASSERT_TRUE(admin) << admin.error().message;
  auto created = (*admin)->exec(fmt::format("CREATE DATABASE {}", database_));
  ASSERT_TRUE(created) << created.error().message;
  where_ = with_database(server_url_, database_);
}

void CatalogEngineTest::TearDown() {
  if (database_.empty()) return;
  auto admin = Database::open(server_url_);
  ASSERT_TRUE(admin) << admin.error().message;
  // FORCE: a catalog a failed assertion left open must not keep the database.
  auto dropped = (*admin)->exec(fmt::format("DROP DATABASE IF EXISTS {} WITH (FORCE)", database_));
  EXPECT_TRUE(dropped) << dropped.error().message;
}

std::unique_ptr<Catalog> CatalogEngineTest::open_catalog() {
  auto catalog = Catalog::open(where_);
  if (!catalog) {
    ADD_FAILURE() << catalog.error().message;
    return nullptr;
  }
  return std::move(*catalog);
}

std::unique_ptr<Database> CatalogEngineTest::connect() {
  auto db = Database::open(where_);
  if (!db) {
    ADD_FAILURE() << db.error().message;
    return nullptr;
  }
  return std::move(*db);
}

}  // namespace bkp::server
