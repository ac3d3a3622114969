// CatalogEngineTest: a fixture that runs a catalog test once per engine, as /sqlite and
// /postgres (TEST_P, instantiated with kCatalogEngines and catalog_engine_name).
//
// /sqlite keeps its catalog in a TempDir; /postgres in a database of its own on the test server
// (testutil::PostgresDb), skipping with a hint when run by hand without one.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <ostream>
#include <string>

#include "server/catalog.h"
#include "server/database.h"
#include "tests/testutil/postgres_db.h"
#include "tests/testutil/temp_dir.h"

namespace bkp::server {

class CatalogEngineTest : public ::testing::TestWithParam<Database::Engine> {
 protected:
  void SetUp() override;

  // Where the test's catalog is: a SQLite file or a PostgreSQL URI, for Catalog::open.
  const std::string& where() const { return where_; }
  // Catalog::open(where()); a failure fails the test and returns null.
  std::unique_ptr<Catalog> open_catalog();
  // A connection of its own to the test's database, to act beneath the catalog.
  std::unique_ptr<Database> connect();
  // /postgres: drops the test's database now, ending every session on it: a server that is
  // reachable no more, as far as the catalog can tell.
  void drop_database() { postgres_.reset(); }

 private:
  testutil::TempDir tmp_{"bkp-catalog"};
  std::unique_ptr<testutil::PostgresDb> postgres_;  // /postgres
  std::string where_;
};

inline const auto kCatalogEngines =
    ::testing::Values(Database::Engine::kSqlite, Database::Engine::kPostgres);

// "sqlite" or "postgres", the test name's suffix.
std::string catalog_engine_name(const ::testing::TestParamInfo<Database::Engine>& info);
// The same, where GoogleTest prints a parameter.
void PrintTo(Database::Engine engine, std::ostream* out);

}  // namespace bkp::server
