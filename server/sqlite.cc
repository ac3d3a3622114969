// The SQLite engine of the catalog (see sqlite.h). It exists so that the catalog reads as SQL
// plus Result handling, with no sqlite3_* calls, no manual finalize and no error codes to forget:
// a statement finalizes itself, and every failure message names the statement and SQLite's own
// explanation ("catalog: UNIQUE constraint failed: registrations.host, registrations.path
// (INSERT INTO registrations ...)").
//
// Binding errors can only come from a wrong parameter index or an out-of-memory condition;
// both are treated as internal errors (abort), since the SQL is ours and fixed.
#include "server/sqlite.h"

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <utility>

namespace bkp::server {
namespace {

constexpr int kBusyTimeoutMs = 5000;

void check_bind(int rc, sqlite3* db) {
  if (rc == SQLITE_OK) return;
  std::fprintf(stderr, "backupd: internal error: sqlite bind: %s\n", sqlite3_errmsg(db));
  std::abort();
}

int error_code(int rc) { return rc == SQLITE_FULL ? ENOSPC : EIO; }

class SqliteStatement final : public Statement {
 public:
  SqliteStatement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  ~SqliteStatement() override { sqlite3_finalize(stmt_); }

  Result<bool> step() override {
    if (stepped_ && sqlite3_stmt_busy(stmt_) == 0) {
      sqlite3_reset(stmt_);  // a finished statement run again: start over
    }
    stepped_ = true;
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) {
      changes_ = sqlite3_changes(db_);
      return false;
    }
    auto e = fail(error_code(rc), fmt::format("catalog: {} ({})", sqlite3_errmsg(db_),
                                              short_sql(sqlite3_sql(stmt_))));
    sqlite3_reset(stmt_);
    return e;
  }

  int changes() const override { return changes_; }
  int64_t int64(int column) const override { return sqlite3_column_int64(stmt_, column); }

  std::string text(int column) const override {
    const unsigned char* p = sqlite3_column_text(stmt_, column);
    int n = sqlite3_column_bytes(stmt_, column);
    return p == nullptr ? std::string()
                        : std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
  }

  bool is_null(int column) const override {
    return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
  }

 private:
  void bind_int64(int index, int64_t value) override {
    restart();
    check_bind(sqlite3_bind_int64(stmt_, index, value), db_);
  }
  void bind_text(int index, std::string_view value) override {
    restart();
    check_bind(sqlite3_bind_text64(stmt_, index, value.data(), value.size(), SQLITE_TRANSIENT,
                                   SQLITE_UTF8),
               db_);
  }
  void bind_null(int index) override {
    restart();
    check_bind(sqlite3_bind_null(stmt_, index), db_);
  }
  void restart() {
    if (std::exchange(stepped_, false)) sqlite3_reset(stmt_);
  }

  sqlite3* db_;
  sqlite3_stmt* stmt_;
  bool stepped_ = false;  // needs a reset before the next binding
  int changes_ = 0;
};

}  // namespace

Result<std::unique_ptr<Sqlite>> Sqlite::open(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX |
                               SQLITE_OPEN_NOFOLLOW,
                           nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);  // a handle is returned even on failure
    return fail(rc == SQLITE_CANTOPEN ? ENOENT : EIO, fmt::format("open {}: {}", path, msg));
  }
  sqlite3_extended_result_codes(db, 0);
  sqlite3_busy_timeout(db, kBusyTimeoutMs);
  return std::unique_ptr<Sqlite>(new Sqlite(db, path));
}

Sqlite::~Sqlite() { sqlite3_close(db_); }

Result<void> Sqlite::exec(const std::string& sql) {
  char* msg = nullptr;
  int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &msg);
  if (rc == SQLITE_OK) return {};
  std::string text = msg ? msg : sqlite3_errstr(rc);
  sqlite3_free(msg);
  return fail(error_code(rc), fmt::format("catalog {}: {} ({})", path_, text, short_sql(sql)));
}

Result<std::unique_ptr<Statement>> Sqlite::prepare(std::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
  if (rc != SQLITE_OK) {
    return fail(EIO, fmt::format("catalog {}: {} ({})", path_, sqlite3_errmsg(db_), short_sql(sql)));
  }
  return std::unique_ptr<Statement>(new SqliteStatement(db_, stmt));
}

Result<void> Sqlite::begin() { return exec("BEGIN IMMEDIATE"); }

Result<void> Sqlite::commit() { return exec("COMMIT"); }

void Sqlite::rollback() { (void)exec("ROLLBACK"); }

}  // namespace bkp::server
