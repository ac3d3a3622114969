// The SQLite wrapper (see sqlite.h). It exists so that the catalog reads as SQL plus Result
// handling, with no sqlite3_* calls, no manual finalize and no error codes to forget: a
// Statement finalizes itself, a Transaction rolls back unless committed, and every failure
// message names the statement and SQLite's own explanation ("catalog: UNIQUE constraint
// failed: registrations.host, registrations.path (INSERT INTO registrations ...)").
//
// Binding errors can only come from a wrong parameter index or an out-of-memory condition;
// both are treated as internal errors (abort), since the SQL is ours and fixed.
#include "server/sqlite.h"

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>

namespace bkp::server {
namespace {

constexpr int kBusyTimeoutMs = 5000;

void check_bind(int rc, sqlite3* db) {
  if (rc == SQLITE_OK) return;
  std::fprintf(stderr, "backupd: internal error: sqlite bind: %s\n", sqlite3_errmsg(db));
  std::abort();
}

std::string short_sql(const char* sql) {
  std::string s = sql ? sql : "?";
  for (char& c : s) {
    if (c == '\n') c = ' ';
  }
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

}  // namespace

Statement::Statement(Statement&& other) noexcept
    : db_(other.db_), stmt_(std::exchange(other.stmt_, nullptr)), stepped_(other.stepped_) {}

Statement::~Statement() {
  if (stmt_ != nullptr) sqlite3_finalize(stmt_);
}

Statement& Statement::bind(int index, int64_t value) {
  if (std::exchange(stepped_, false)) sqlite3_reset(stmt_);
  check_bind(sqlite3_bind_int64(stmt_, index, value), db_);
  return *this;
}

Statement& Statement::bind(int index, std::string_view value) {
  if (std::exchange(stepped_, false)) sqlite3_reset(stmt_);
  check_bind(sqlite3_bind_text64(stmt_, index, value.data(), value.size(), SQLITE_TRANSIENT,
                                 SQLITE_UTF8),
             db_);
  return *this;
}

Statement& Statement::bind(int index, std::nullopt_t) {
  if (std::exchange(stepped_, false)) sqlite3_reset(stmt_);
  check_bind(sqlite3_bind_null(stmt_, index), db_);
  return *this;
}

Statement& Statement::bind(int index, const std::optional<std::string>& value) {
  return value ? bind(index, std::string_view(*value)) : bind(index, std::nullopt);
}

Statement& Statement::bind(int index, const std::optional<int64_t>& value) {
  return value ? bind(index, *value) : bind(index, std::nullopt);
}

Error Statement::error(int rc) const {
  return Error{rc == SQLITE_FULL ? ENOSPC : EIO,
               fmt::format("catalog: {} ({})", sqlite3_errmsg(db_), short_sql(sqlite3_sql(stmt_)))};
}

Result<bool> Statement::step() {
  if (stepped_ && sqlite3_stmt_busy(stmt_) == 0) {
    sqlite3_reset(stmt_);  // a finished statement run again: start over
  }
  stepped_ = true;
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  Error e = error(rc);
  sqlite3_reset(stmt_);
  return tl::unexpected(e);
}

Result<void> Statement::run() {
  while (BKP_TRY(step())) {
  }
  return {};
}

int64_t Statement::int64(int column) const { return sqlite3_column_int64(stmt_, column); }

std::string Statement::text(int column) const {
  const unsigned char* p = sqlite3_column_text(stmt_, column);
  int n = sqlite3_column_bytes(stmt_, column);
  return p == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
}

bool Statement::is_null(int column) const {
  return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

std::optional<int64_t> Statement::opt_int64(int column) const {
  if (is_null(column)) return std::nullopt;
  return int64(column);
}

std::optional<std::string> Statement::opt_text(int column) const {
  if (is_null(column)) return std::nullopt;
  return text(column);
}

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
  return fail(rc == SQLITE_FULL ? ENOSPC : EIO,
              fmt::format("catalog {}: {} ({})", path_, text, short_sql(sql.c_str())));
}

Result<Statement> Sqlite::prepare(std::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
  if (rc != SQLITE_OK) {
    return fail(EIO, fmt::format("catalog {}: {} ({})", path_, sqlite3_errmsg(db_),
                                 short_sql(std::string(sql).c_str())));
  }
  return Statement(db_, stmt);
}

int64_t Sqlite::last_insert_rowid() const { return sqlite3_last_insert_rowid(db_); }

int Sqlite::changes() const { return sqlite3_changes(db_); }

Result<Transaction> Transaction::begin(Sqlite& db) {
  BKP_TRY_VOID(db.exec("BEGIN IMMEDIATE"));
  return Transaction(&db);
}

Transaction::~Transaction() {
  if (db_ != nullptr) (void)db_->exec("ROLLBACK");
}

Result<void> Transaction::commit() {
  BKP_TRY_VOID(db_->exec("COMMIT"));
  db_ = nullptr;
  return {};
}

}  // namespace bkp::server
