// The PostgreSQL engine of the catalog (see postgres.h), over libpq rather than libpqxx, which
// reports errors by throwing (docs/ARCHITECTURE.md, "The catalog's engines").
//
// Every statement goes out with PQexecParams and its parameters as text of unspecified type,
// which the server infers from the SQL: the catalog binds integers and strings only. Results are
// read whole (the catalog's queries return a handful of rows), so a Statement steps through a
// PGresult it owns.
//
// Reconnecting: libpq marks the connection CONNECTION_BAD once the server is gone. A statement
// outside a transaction is then sent once more after PQreset; an INSERT whose first sending was
// committed before the connection dropped can so be stored twice, which costs a duplicate run
// row at worst, against a run lost on every server restart otherwise. Inside a transaction the
// statements before it were rolled back with the connection, so only the caller can redo the
// transaction (Catalog::in_transaction does).
#include "server/postgres.h"

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <utility>

#include "common/log.h"

namespace bkp::server {
namespace {

// libpq's default is to wait forever for a server that accepts no connection.
constexpr const char* kConnectTimeoutSeconds = "10";
constexpr size_t kMaxParams = 100;  // the catalog's statements have a dozen at most

using ResultPtr = std::unique_ptr<PGresult, void (*)(PGresult*)>;

bool succeeded(const PGresult* r) {
  auto status = PQresultStatus(r);
  return r != nullptr && (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK);
}

// Where the URI holds a password: after user: in the authority, and password= parameters.
std::vector<std::pair<size_t, size_t>> password_spans(std::string_view uri) {
  std::vector<std::pair<size_t, size_t>> spans;
  size_t scheme = uri.find("://");
  if (scheme == std::string_view::npos) return spans;
  size_t start = scheme + 3;
  size_t end = uri.find_first_of("/?#", start);
  if (end == std::string_view::npos) end = uri.size();
  size_t at = uri.substr(0, end).rfind('@');
  if (at != std::string_view::npos && at > start) {
    size_t colon = uri.substr(0, at).find(':', start);
    if (colon != std::string_view::npos) spans.emplace_back(colon + 1, at - colon - 1);
  }
  size_t query = uri.find('?', start);
  while (query != std::string_view::npos && query < uri.size()) {
    size_t param = query + 1;
    size_t next = uri.find('&', param);
    size_t param_end = next == std::string_view::npos ? uri.size() : next;
    if (uri.substr(param, param_end - param).starts_with("password=")) {
      spans.emplace_back(param + 9, param_end - param - 9);
    }
    query = next;
  }
  return spans;
}

// libpq's message (several lines when several hosts were tried) as one line, with any password
// of the URI masked: a malformed URI is quoted back in parts.
std::string one_line(std::string msg, std::string_view uri) {
  for (auto [pos, len] : password_spans(uri)) {
    std::string secret(uri.substr(pos, len));
    for (size_t at; !secret.empty() && (at = msg.find(secret)) != std::string::npos;) {
      msg.replace(at, secret.size(), "***");
    }
  }
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  for (size_t at; (at = msg.find('\n')) != std::string::npos;) msg.replace(at, 1, "; ");
  std::erase(msg, '\t');
  return msg;
}

class PostgresStatement final : public Statement {
 public:
  PostgresStatement(Postgres& db, std::string sql) : db_(db), sql_(std::move(sql)) {}

  Result<bool> step() override {
    if (!result_) {
      result_ = BKP_TRY(db_.execute(sql_, params_));
      row_ = -1;
      changes_ = std::atoi(PQcmdTuples(result_.get()));
    }
    if (++row_ < PQntuples(result_.get())) return true;
    result_.reset();  // done: the next step runs the statement again
    return false;
  }

  int changes() const override { return changes_; }
  int64_t int64(int column) const override { return std::strtoll(value(column), nullptr, 10); }
  std::string text(int column) const override {
    return std::string(value(column),
                       static_cast<size_t>(PQgetlength(result_.get(), row_, column)));
  }
  bool is_null(int column) const override { return PQgetisnull(result_.get(), row_, column) != 0; }

 private:
  void bind_int64(int index, int64_t value) override { param(index) = std::to_string(value); }
  void bind_text(int index, std::string_view value) override { param(index) = std::string(value); }
  void bind_null(int index) override { param(index) = std::nullopt; }

  std::optional<std::string>& param(int index) {
    if (index < 1 || static_cast<size_t>(index) > kMaxParams) {
      std::fprintf(stderr, "backupd: internal error: postgres bind index %d (%s)\n", index,
                   sql_.c_str());
      std::abort();
    }
    result_.reset();
    if (params_.size() < static_cast<size_t>(index)) params_.resize(static_cast<size_t>(index));
    return params_[static_cast<size_t>(index) - 1];
  }

  const char* value(int column) const { return PQgetvalue(result_.get(), row_, column); }

  Postgres& db_;
  std::string sql_;  // with $N placeholders
  Postgres::Params params_;
  ResultPtr result_{nullptr, PQclear};  // null: not run since the last binding or the end
  int row_ = -1;
  int changes_ = 0;
};

}  // namespace

std::string redact_uri(std::string_view uri) {
  std::string out(uri);
  auto spans = password_spans(uri);
  for (auto it = spans.rbegin(); it != spans.rend(); ++it)
    out.replace(it->first, it->second, "***");
  return out;
}

std::string postgres_placeholders(std::string_view sql) {
  std::string out;
  out.reserve(sql.size() + 16);
  int largest = 0;
  char quote = 0;  // the quote character we are inside of, if any
  bool comment = false;
  for (size_t i = 0; i < sql.size(); ++i) {
    char c = sql[i];
    if (comment) {
      comment = c != '\n';
    } else if (quote != 0) {
      if (c == quote) quote = 0;  // a doubled quote re-enters at once: same result
    } else if (c == '\'' || c == '"') {
      quote = c;
    } else if (c == '-' && i + 1 < sql.size() && sql[i + 1] == '-') {
      comment = true;
    } else if (c == '?') {
      size_t digits = i + 1;
      while (digits < sql.size() && sql[digits] >= '0' && sql[digits] <= '9') ++digits;
      int number = digits > i + 1
                       ? std::atoi(std::string(sql.substr(i + 1, digits - i - 1)).c_str())
                       : largest + 1;
      largest = std::max(largest, number);
      out += fmt::format("${}", number);
      i = digits - 1;
      continue;
    }
    out += c;
  }
  return out;
}

Result<std::unique_ptr<Postgres>> Postgres::connect(const std::string& uri) {
  // The URI comes after the default timeout, so a connect_timeout in it wins.
  const char* keywords[] = {"connect_timeout", "dbname", nullptr};
  const char* values[] = {kConnectTimeoutSeconds, uri.c_str(), nullptr};
  PGconn* conn = PQconnectdbParams(keywords, values, /*expand_dbname=*/1);
  std::string name = redact_uri(uri);
  if (conn == nullptr) return fail(ENOMEM, fmt::format("catalog {}: out of memory", name));
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string msg = one_line(PQerrorMessage(conn), uri);
    PQfinish(conn);
    return fail(ECONNREFUSED, fmt::format("catalog {}: cannot connect: {}", name, msg));
  }
  // Notices are no news to the catalog (CREATE TABLE IF NOT EXISTS of an existing table, a
  // ROLLBACK after a failed COMMIT); libpq would print them to stderr. Kept across PQreset.
  PQsetNoticeProcessor(conn, [](void*, const char*) {}, nullptr);
  return std::unique_ptr<Postgres>(new Postgres(conn, std::move(name)));
}

Postgres::~Postgres() { PQfinish(conn_); }

Error Postgres::error(const PGresult* result, const std::string& sql) const {
  const char* state = result ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
  const char* primary = result ? PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
  std::string_view sqlstate = state ? state : "";
  int code = EIO;
  if (PQstatus(conn_) == CONNECTION_BAD) {
    code = ECONNRESET;
  } else if (sqlstate == "40001" || sqlstate == "40P01") {  // serialization failure, deadlock
    code = EAGAIN;
  } else if (sqlstate == "53100") {  // disk full
    code = ENOSPC;
  }
  std::string msg = primary ? std::string(primary) : one_line(PQerrorMessage(conn_), "");
  return Error{code, fmt::format("catalog {}: {} ({})", name_, msg, short_sql(sql))};
}

Result<ResultPtr> Postgres::execute(const std::string& sql, const Params& params) {
  std::vector<const char*> values;
  for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
  auto send = [&] {
    return ResultPtr(params.empty()
                         ? PQexec(conn_, sql.c_str())
                         : PQexecParams(conn_, sql.c_str(), static_cast<int>(values.size()),
                                        nullptr, values.data(), nullptr, nullptr, 0),
                     PQclear);
  };
  ResultPtr result = send();
  if (!succeeded(result.get()) && PQstatus(conn_) == CONNECTION_BAD && !in_transaction_) {
    log::warn("catalog {}: connection lost ({}); reconnecting", name_,
              one_line(PQerrorMessage(conn_), ""));
    PQreset(conn_);
    if (PQstatus(conn_) == CONNECTION_OK) result = send();
  }
  if (!succeeded(result.get())) return tl::unexpected(error(result.get(), sql));
  return result;
}

Result<void> Postgres::exec(const std::string& sql) {
  BKP_TRY_VOID(execute(sql, {}));
  return {};
}

Result<std::unique_ptr<Statement>> Postgres::prepare(std::string_view sql) {
  return std::unique_ptr<Statement>(new PostgresStatement(*this, postgres_placeholders(sql)));
}

Result<void> Postgres::begin() {
  if (PQstatus(conn_) == CONNECTION_BAD) {
    PQreset(conn_);
    if (PQstatus(conn_) != CONNECTION_OK) {
      return fail(ECONNRESET, fmt::format("catalog {}: cannot reconnect: {}", name_,
                                          one_line(PQerrorMessage(conn_), "")));
    }
  }
  BKP_TRY_VOID(exec("BEGIN ISOLATION LEVEL SERIALIZABLE"));
  in_transaction_ = true;
  return {};
}

Result<void> Postgres::commit() {
  auto committed = exec("COMMIT");  // never resent: it may have committed before the drop
  in_transaction_ = false;
  return committed;
}

void Postgres::rollback() {
  if (PQstatus(conn_) == CONNECTION_OK) (void)exec("ROLLBACK");
  in_transaction_ = false;
}

}  // namespace bkp::server
