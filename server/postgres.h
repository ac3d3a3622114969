// Postgres: the Database (server/database.h) over one libpq connection, for a catalog that
// several backupd instances share.
//
// Statements are sent with PQexecParams, parameters as text: nothing is prepared on the server,
// so a connection that was reset has no statements to lose. The catalog's `?` / `?N`
// placeholders become $N (outside string literals and quoted names).
//
// A dropped connection (the server restarted, the backend was terminated) is reset and the
// statement sent once more, unless it was inside a transaction: then the transaction is gone,
// the statement fails with ECONNRESET and the next begin() resets the connection. Errors name
// the catalog by its URI without the password, with the server's message and the statement.
//
// Thread-safety: none (see database.h).
#pragma once

#include <libpq-fe.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "server/database.h"

namespace bkp::server {

class Postgres final : public Database {
 public:
  // Connects to `uri` (postgresql://...). Fails, naming the catalog, if the URI is malformed or
  // the server cannot be reached or refuses us.
  static Result<std::unique_ptr<Postgres>> connect(const std::string& uri);
  ~Postgres() override;

  Engine engine() const override { return Engine::kPostgres; }
  const std::string& name() const override { return name_; }
  Result<void> exec(const std::string& sql) override;
  Result<std::unique_ptr<Statement>> prepare(std::string_view sql) override;
  Result<void> begin() override;
  Result<void> commit() override;
  void rollback() override;

  // Sends one statement with text parameters (nullopt: NULL), reconnecting as described above.
  // The result is a command or tuples result; anything else is the error.
  using Params = std::vector<std::optional<std::string>>;
  Result<std::unique_ptr<PGresult, void (*)(PGresult*)>> execute(const std::string& sql,
                                                                 const Params& params);

 private:
  Postgres(PGconn* conn, std::string name) : conn_(conn), name_(std::move(name)) {}
  // The statement's error: the server's message (or libpq's, for a lost connection) and errno.
  Error error(const PGresult* result, const std::string& sql) const;

  PGconn* conn_;
  std::string name_;
  bool in_transaction_ = false;
};

// `?` and `?N` placeholders to $N, as SQLite numbers them: a bare `?` is one more than the
// largest number so far. Text in '...', "..." and comments is left alone.
std::string postgres_placeholders(std::string_view sql);

// The URI without its password (user:secret@ and password=secret become user:***@ and
// password=***), for messages.
std::string redact_uri(std::string_view uri);

}  // namespace bkp::server
