//! Applying the client migrations to the local SQLite database.

use rusqlite::{Connection, OptionalExtension};

pub use crate::migrations::{MigrationFile, Migrations};

use super::StoreError;

/// Applies every migration newer than the database's, each in its own transaction,
/// and returns the fingerprint recorded by the last one.
pub(crate) fn apply(migrations: &Migrations, conn: &mut Connection) -> Result<String, StoreError> {
    let has_table: bool = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sync_migrations'",
            [],
            |_| Ok(true),
        )
        .optional()?
        .unwrap_or(false);
    let current: u32 = if has_table {
        conn.query_row(
            "SELECT COALESCE(MAX(\"version\"), 0) FROM \"sync_migrations\"",
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
        "SELECT \"fingerprint\" FROM \"sync_migrations\" ORDER BY \"version\" DESC LIMIT 1",
        [],
        |r| r.get(0),
    )?)
}
