// Database and Statement: the catalog's view of a SQL engine, so that its SQL is written once and
// runs on SQLite (one file in the state directory, the default) or on PostgreSQL (a catalog
// shared by several backupd instances). See docs/ARCHITECTURE.md, "The catalog's engines".
//
// SQL is written with `?` (next parameter) and `?N` (parameter N) placeholders, as SQLite spells
// them; the PostgreSQL connection rewrites them to $N. Only SQL both engines accept belongs in a
// Statement; what differs (schema types, pragmas, migrations) lives in server/catalog_schema.cc.
//
// Errors are Result values carrying the engine's own message and the statement; nothing throws.
// Error codes the catalog acts on: EAGAIN (a concurrent transaction won: run the whole
// transaction again), ECONNRESET (the connection dropped inside a transaction: the transaction
// is gone, the next begin() reconnects), ENOSPC (the disk is full); anything else is EIO.
//
// Thread-safety: none. A Database and its Statements belong to one thread at a time; the Catalog
// serialises access with its own mutex.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "common/result.h"

namespace bkp::server {

class Statement {
 public:
  virtual ~Statement() = default;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  // Parameters are 1-based. Binding after a step starts the statement over. A bad index is a
  // bug in our SQL and aborts.
  Statement& bind(int index, int64_t value) {
    bind_int64(index, value);
    return *this;
  }
  Statement& bind(int index, std::string_view value) {
    bind_text(index, value);
    return *this;
  }
  Statement& bind(int index, const std::string& value) {
    return bind(index, std::string_view(value));
  }
  Statement& bind(int index, const char* value) { return bind(index, std::string_view(value)); }
  Statement& bind(int index, std::nullopt_t) {
    bind_null(index);
    return *this;
  }
  Statement& bind(int index, const std::optional<std::string>& value) {
    return value ? bind(index, std::string_view(*value)) : bind(index, std::nullopt);
  }
  Statement& bind(int index, const std::optional<int64_t>& value) {
    return value ? bind(index, *value) : bind(index, std::nullopt);
  }

  // One step: true while a row is available, false when done (the next step runs the statement
  // again). Errors carry the statement text.
  virtual Result<bool> step() = 0;
  // Steps to completion, ignoring rows (INSERT/UPDATE/DELETE).
  Result<void> run();
  // Rows changed by the statement's last run (INSERT/UPDATE/DELETE).
  virtual int changes() const = 0;

  // Columns are 0-based. A NULL reads as 0 / "" unless asked with the optional variants.
  virtual int64_t int64(int column) const = 0;
  virtual std::string text(int column) const = 0;
  virtual bool is_null(int column) const = 0;
  std::optional<int64_t> opt_int64(int column) const;
  std::optional<std::string> opt_text(int column) const;

 protected:
  Statement() = default;
  virtual void bind_int64(int index, int64_t value) = 0;
  virtual void bind_text(int index, std::string_view value) = 0;
  virtual void bind_null(int index) = 0;
};

class Database {
 public:
  enum class Engine { kSqlite, kPostgres };

  // "postgresql://..." or "postgres://..." (any libpq URI): PostgreSQL; anything else is the
  // path of a SQLite file, created if missing. Errors name the catalog (never its password).
  static Result<std::unique_ptr<Database>> open(const std::string& where);
  static bool is_postgres_uri(std::string_view where);

  virtual ~Database() = default;
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  virtual Engine engine() const = 0;
  // The file, or the URI without its password: what messages name.
  virtual const std::string& name() const = 0;
  // Runs one or more statements without parameters (schema, pragmas).
  virtual Result<void> exec(const std::string& sql) = 0;
  virtual Result<std::unique_ptr<Statement>> prepare(std::string_view sql) = 0;

  // Transactions (use Transaction). begin() takes the write lock at once on SQLite (BEGIN
  // IMMEDIATE) and is SERIALIZABLE on PostgreSQL, reconnecting first if the connection dropped.
  virtual Result<void> begin() = 0;
  virtual Result<void> commit() = 0;
  virtual void rollback() = 0;

 protected:
  Database() = default;
};

// begin() on construction, rollback() on destruction unless commit() succeeded.
class Transaction {
 public:
  static Result<Transaction> begin(Database& db);
  Transaction(Transaction&& other) noexcept : db_(std::exchange(other.db_, nullptr)) {}
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction();
  Result<void> commit();

 private:
  explicit Transaction(Database* db) : db_(db) {}
  Database* db_;  // null once committed or rolled back
};

// "SELECT a\n FROM b WHERE ..." as one line of at most 60 characters, for error messages.
std::string short_sql(std::string_view sql);

}  // namespace bkp::server
