//! Applying the client migrations to the local SQLite database.

use const_format::concatcp;
use rusqlite::{Connection, OptionalExtension};
use sync_model::sql::meta;

pub use crate::migrations::{MigrationFile, Migrations};

use super::StoreError;

/// Applies every migration newer than the database's, each in its own transaction,
/// and returns the fingerprint recorded by the last one.
pub(crate) fn apply(migrations: &Migrations, conn: &mut Connection) -> Result<String, StoreError> {
    let has_table: bool = conn
        .query_row(
            concatcp!(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '",
                meta::MIGRATIONS,
                "'"
            ),
            [],
            |_| Ok(true),
        )
        .optional()?
        .unwrap_or(false);
    let current: u32 = if has_table {
        conn.query_row(
            concatcp!(
                "SELECT COALESCE(MAX(\"version\"), 0) FROM \"",
                meta::MIGRATIONS,
                "\""
            ),
            [],
            |r| r.get(0),
        )?
    } else {
        0
    };
    let latest = migrations.files().last().map_or(0, |f| f.version);
    if current > latest {
        return Err(StoreError::NewerDatabase {
            database: current,
            app: latest,
        });
    }
    for f in migrations.files().iter().filter(|f| f.version > current) {
        let tx = conn.transaction()?;
        tx.execute_batch(&f.sql)
            .map_err(|e| StoreError::MigrationFailed {
                version: f.version,
                name: f.name.clone(),
                source: e,
            })?;
        tx.commit()?;
    }
    Ok(conn.query_row(
        concatcp!(
            "SELECT \"fingerprint\" FROM \"",
            meta::MIGRATIONS,
            "\" ORDER BY \"version\" DESC LIMIT 1"
        ),
        [],
        |r| r.get(0),
    )?)
}
