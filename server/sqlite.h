// Sqlite: the Database (server/database.h) over one SQLite connection, the catalog's default
// engine (STATE/catalog.db).
//
// Every SQLite failure becomes a Result error carrying SQLite's own message and the statement
// it came from; nothing here throws. A statement is reset before each reuse, so it can be
// prepared once and stepped many times, and finalized when destroyed.
//
// Thread-safety: none (see database.h).
#pragma once

#include <sqlite3.h>

#include <memory>
#include <string>
#include <string_view>

#include "server/database.h"

namespace bkp::server {

class Sqlite final : public Database {
 public:
  // Opens (creating) the database file. The connection is in serialized mode; busy waits of up
  // to 5 s are absorbed by SQLite's busy handler.
  static Result<std::unique_ptr<Sqlite>> open(const std::string& path);
  ~Sqlite() override;

  Engine engine() const override { return Engine::kSqlite; }
  const std::string& name() const override { return path_; }
  Result<void> exec(const std::string& sql) override;
  Result<std::unique_ptr<Statement>> prepare(std::string_view sql) override;
  Result<void> begin() override;
  Result<void> commit() override;
  void rollback() override;

 private:
  Sqlite(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  sqlite3* db_;
  std::string path_;
};

}  // namespace bkp::server
