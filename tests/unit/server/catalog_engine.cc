// The per-engine catalog fixture (catalog_engine.h): the engine picks where the catalog lives,
// and nothing else differs between the two runs of a test.
#include "tests/unit/server/catalog_engine.h"

namespace bkp::server {

void PrintTo(Database::Engine engine, std::ostream* out) {
  *out << (engine == Database::Engine::kSqlite ? "sqlite" : "postgres");
}

std::string catalog_engine_name(const ::testing::TestParamInfo<Database::Engine>& info) {
  return ::testing::PrintToString(info.param);
}

void CatalogEngineTest::SetUp() {
  if (GetParam() == Database::Engine::kSqlite) {
    where_ = tmp_.sub("catalog.db");
    return;
  }
  auto db = testutil::PostgresDb::for_test();
  ASSERT_TRUE(db) << db.error().message;
  if (!*db) GTEST_SKIP() << testutil::kNoPostgresServer;
  postgres_ = std::move(*db);
  where_ = postgres_->url();
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
