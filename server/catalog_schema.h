// The catalog's schema, the one place where its two engines differ (server/database.h): column
// types and generated ids, pragmas, and how the schema version is kept and migrated.
//
// SQLite keeps the version in PRAGMA user_version and upgrades catalogs of every older version
// in place. PostgreSQL keeps it in a schema_version table (one row); the schema is created or
// migrated inside one transaction holding pg_advisory_xact_lock(kSchemaLockKey), so backupd
// instances starting at once on a new database create it once, the others waiting and then
// finding it done.
#pragma once

#include "common/result.h"
#include "server/database.h"

namespace bkp::server {

constexpr int kCatalogSchemaVersion = 7;

// Creates the schema of a new catalog, upgrades an older one; a catalog of a newer version is
// an error (EPROTO) naming it.
Result<void> init_catalog_schema(Database& db);

}  // namespace bkp::server
