// Sqlite: a small RAII wrapper over one SQLite connection and its prepared statements.
//
// Every SQLite failure becomes a Result error carrying SQLite's own message and the statement
// it came from; nothing here throws. A Statement is reset on destruction and before each
// reuse, so a statement object can be prepared once and stepped many times.
//
// Thread-safety: none. A Sqlite and its Statements belong to one thread at a time; the
// Catalog serialises access with its own mutex.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"

namespace bkp::server {

class Sqlite;

class Statement {
 public:
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&&) = delete;
  Statement(const Statement&) = delete;
  ~Statement();

  // Parameters are 1-based, as in SQLite. Binding never fails for valid indices (a bad index
  // is a bug in our SQL and aborts).
  Statement& bind(int index, int64_t value);
  Statement& bind(int index, std::string_view value);
  Statement& bind(int index, const std::string& value) { return bind(index, std::string_view(value)); }
  Statement& bind(int index, const char* value) { return bind(index, std::string_view(value)); }
  Statement& bind(int index, std::nullopt_t);
  Statement& bind(int index, const std::optional<std::string>& value);
  Statement& bind(int index, const std::optional<int64_t>& value);

  // One step: true while a row is available, false when done. Errors carry the statement text.
  Result<bool> step();
  // Steps to completion, ignoring rows (INSERT/UPDATE/DELETE).
  Result<void> run();

  // Columns are 0-based. A NULL reads as 0 / "" unless asked with the optional variants.
  int64_t int64(int column) const;
  std::string text(int column) const;
  bool is_null(int column) const;
  std::optional<int64_t> opt_int64(int column) const;
  std::optional<std::string> opt_text(int column) const;

 private:
  friend class Sqlite;
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  Error error(int rc) const;

  sqlite3* db_;
  sqlite3_stmt* stmt_;
  bool stepped_ = false;  // needs a reset before the next binding
};

class Sqlite {
 public:
  // Opens (creating) the database file. The connection is in serialized mode; busy waits of up
  // to 5 s are absorbed by SQLite's busy handler.
  static Result<std::unique_ptr<Sqlite>> open(const std::string& path);
  ~Sqlite();
  Sqlite(const Sqlite&) = delete;
  Sqlite& operator=(const Sqlite&) = delete;

  // Runs one or more statements without parameters (schema, pragmas, BEGIN/COMMIT).
  Result<void> exec(const std::string& sql);
  Result<Statement> prepare(std::string_view sql);
  int64_t last_insert_rowid() const;
  int changes() const;  // rows changed by the last INSERT/UPDATE/DELETE
  const std::string& path() const { return path_; }

 private:
  Sqlite(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  sqlite3* db_;
  std::string path_;
};

// BEGIN IMMEDIATE on construction, ROLLBACK on destruction unless commit() succeeded.
class Transaction {
 public:
  static Result<Transaction> begin(Sqlite& db);
  Transaction(Transaction&& other) noexcept : db_(std::exchange(other.db_, nullptr)) {}
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction();
  Result<void> commit();

 private:
  explicit Transaction(Sqlite* db) : db_(db) {}
  Sqlite* db_;  // null once committed or rolled back
};

}  // namespace bkp::server
