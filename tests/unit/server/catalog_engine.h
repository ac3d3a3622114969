// CatalogEngineTest: a fixture that runs a catalog test once per engine, as /sqlite and
// /postgres (TEST_P, instantiated with kCatalogEngines and catalog_engine_name).
//
// /sqlite keeps its catalog in a TempDir. /postgres creates a database of its own on the test
// server and drops it after, so tests never see each other's rows. The server is the one
// tests/scale/postgres.sh started: its URL comes from BKP_TEST_POSTGRES_URL, or from the env
// file that BKP_TEST_POSTGRES_ENV names (CTest's `postgres` fixture sets that one). Without
// either, /postgres cases skip, saying how to run them; with the env file missing they fail,
// since the fixture was asked for and did not start.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "server/catalog.h"
#include "server/database.h"
#include "tests/testutil/temp_dir.h"

namespace bkp::server {

class CatalogEngineTest : public ::testing::TestWithParam<Database::Engine> {
 protected:
  void SetUp() override;
  void TearDown() override;

  // Where the test's catalog is: a SQLite file or a PostgreSQL URI, for Catalog::open.
  const std::string& where() const { return where_; }
  // Catalog::open(where()); a failure fails the test and returns null.
  std::unique_ptr<Catalog> open_catalog();
  // A connection of its own to the test's database, to act beneath the catalog.
  std::unique_ptr<Database> connect();

 private:
  testutil::TempDir tmp_{"bkp-catalog"};
  std::string where_;
  std::string server_url_;  // /postgres: the server's maintenance database
  std::string database_;    // /postgres: the test's database, dropped at the end
};

inline const auto kCatalogEngines =
    ::testing::Values(Database::Engine::kSqlite, Database::Engine::kPostgres);

// "sqlite" or "postgres", the test name's suffix.
std::string catalog_engine_name(const ::testing::TestParamInfo<Database::Engine>& info);

}  // namespace bkp::server
