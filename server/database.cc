// What both engines share (see database.h): choosing the engine from the catalog setting, the
// Transaction guard, and the convenience reads every Statement gets for free.
#include "server/database.h"

#include "server/postgres.h"
#include "server/sqlite.h"

namespace bkp::server {

bool Database::is_postgres_uri(std::string_view where) {
  return where.starts_with("postgresql://") || where.starts_with("postgres://");
}

Result<std::unique_ptr<Database>> Database::open(const std::string& where) {
  if (is_postgres_uri(where)) return std::unique_ptr<Database>(BKP_TRY(Postgres::connect(where)));
  return std::unique_ptr<Database>(BKP_TRY(Sqlite::open(where)));
}

Result<void> Statement::run() {
  while (BKP_TRY(step())) {
  }
  return {};
}

std::optional<int64_t> Statement::opt_int64(int column) const {
  if (is_null(column)) return std::nullopt;
  return int64(column);
}

std::optional<std::string> Statement::opt_text(int column) const {
  if (is_null(column)) return std::nullopt;
  return text(column);
}

Result<Transaction> Transaction::begin(Database& db) {
  BKP_TRY_VOID(db.begin());
  return Transaction(&db);
}

Transaction::~Transaction() {
  if (db_ != nullptr) db_->rollback();
}

Result<void> Transaction::commit() {
  BKP_TRY_VOID(db_->commit());  // if it fails, the destructor rolls back what may be left
  db_ = nullptr;
  return {};
}

std::string short_sql(std::string_view sql) {
  std::string s(sql);
  for (char& c : s) {
    if (c == '\n') c = ' ';
  }
  size_t start = s.find_first_not_of(' ');
  s.erase(0, start == std::string::npos ? s.size() : start);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

}  // namespace bkp::server
