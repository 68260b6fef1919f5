//! Every difference between the SQL dialects syncgen targets, in one place: column types
//! ([`column_type`]), quoting, literals, the forms of statements that differ (row locks,
//! dropping an index, changing a column's type, defaults) and how values travel through
//! each driver (placeholders, what a column reads back as).
//!
//! The CLI's migrations and the server's storage both call [`Dialect`]; no other code
//! branches on the database. (The server's driver layer still picks rusqlite or sqlx by
//! backend, which is a choice of driver, not of SQL.)

use serde::{Deserialize, Serialize};

use crate::model::{FieldType, ScalarType, TypeKind};

/// A SQL dialect syncgen targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// SQLite 3.35+ (client store and the default server).
    Sqlite,
    /// PostgreSQL 13+.
    Postgres,
    /// MySQL 8 / MariaDB 10.6+.
    Mysql,
}

impl Dialect {
    /// Every dialect.
    pub const ALL: [Dialect; 3] = [Dialect::Sqlite, Dialect::Postgres, Dialect::Mysql];

    /// The folder name used for this dialect's migrations.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
            Dialect::Mysql => "mysql",
        }
    }

    /// Quotes an identifier for this dialect. Identifiers are always quoted, so entities
    /// named `Order` or fields named `type` work.
    pub fn quote(self, ident: &str) -> String {
        // Hand-rolled (no `format!`, no `replace` allocation): migrations quote every
        // identifier of every column, so this is on the hot path of `sync-cli generate`.
        let q = match self {
            Dialect::Sqlite | Dialect::Postgres => '"',
            Dialect::Mysql => '`',
        };
        let mut out = String::with_capacity(ident.len() + 2);
        out.push(q);
        let mut parts = ident.split(q);
        out.push_str(parts.next().unwrap_or_default());
        for part in parts {
            out.push(q);
            out.push(q);
            out.push_str(part);
        }
        out.push(q);
        out
    }

    /// A string literal: single quotes doubled; on MySQL, whose string literals treat a
    /// backslash as an escape, backslashes doubled too.
    pub fn string_literal(self, s: &str) -> String {
        let escaped = s.replace('\'', "''");
        match self {
            Dialect::Mysql => format!("'{}'", escaped.replace('\\', "\\\\")),
            _ => format!("'{escaped}'"),
        }
    }

    /// A boolean literal: `1`/`0` on SQLite (no boolean type), `TRUE`/`FALSE` elsewhere.
    pub fn bool_literal(self, b: bool) -> &'static str {
        match (self, b) {
            (Dialect::Sqlite, true) => "1",
            (Dialect::Sqlite, false) => "0",
            (_, true) => "TRUE",
            (_, false) => "FALSE",
        }
    }

    /// A timestamp literal's text from the canonical form (`2026-11-30T12:00:00.000000Z`,
    /// see `sync_runtime::time`): as is, except on MySQL, whose `DATETIME(6)` takes
    /// `2026-11-30 12:00:00.000000` (UTC, no offset). Returns the text to quote with
    /// [`Dialect::string_literal`].
    pub fn timestamp_text(self, canonical: &str) -> String {
        match self {
            Dialect::Mysql => canonical
                .replacen('T', " ", 1)
                .trim_end_matches('Z')
                .to_string(),
            _ => canonical.to_string(),
        }
    }

    /// The type of a JSON column (sets, `json` fields, clocks): `TEXT` on SQLite, `JSONB`
    /// on PostgreSQL, `JSON` on MySQL.
    pub fn json_type(self) -> &'static str {
        match self {
            Dialect::Sqlite => "TEXT",
            Dialect::Postgres => "JSONB",
            Dialect::Mysql => "JSON",
        }
    }

    /// The type of versions, sequence numbers and counters (`i64`): `INTEGER` on SQLite,
    /// `BIGINT` elsewhere.
    pub fn big_int_type(self) -> &'static str {
        scalar_type(ScalarType::I64, self)
    }

    /// The type of a text column that is part of a key or index (entity names, account
    /// ids, idempotency keys): `TEXT`, except `VARCHAR(255)` on MySQL, which cannot index
    /// unbounded text.
    pub fn key_text_type(self) -> &'static str {
        match self {
            Dialect::Mysql => "VARCHAR(255)",
            _ => "TEXT",
        }
    }

    /// `DEFAULT <literal>` for a column of type `column_type`. MySQL takes a default for
    /// a `LONGTEXT`, `JSON` or `LONGBLOB` column only as an expression in parentheses.
    pub fn default_clause(self, column_type: &str, literal: &str) -> String {
        if self == Dialect::Mysql && matches!(column_type, "LONGTEXT" | "JSON" | "LONGBLOB") {
            format!("DEFAULT ({literal})")
        } else {
            format!("DEFAULT {literal}")
        }
    }

    /// `DROP INDEX` of index `index` on `table` (both unquoted): MySQL names the table.
    pub fn drop_index(self, index: &str, table: &str) -> String {
        match self {
            Dialect::Mysql => format!("DROP INDEX {} ON {}", self.quote(index), self.quote(table)),
            _ => format!("DROP INDEX {}", self.quote(index)),
        }
    }

    /// The statement that changes a column's type, given the table (unquoted), the
    /// column (unquoted), its new type and its whole new definition (`"col" TYPE NOT NULL
    /// DEFAULT ...`, which MySQL restates). `None` on SQLite, whose columns keep their
    /// INTEGER/REAL affinity whatever the width.
    pub fn change_column_type(
        self,
        table: &str,
        column: &str,
        new_type: &str,
        definition: &str,
    ) -> Option<String> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some(format!(
                "ALTER TABLE {} ALTER COLUMN {} TYPE {new_type}",
                self.quote(table),
                self.quote(column)
            )),
            Dialect::Mysql => Some(format!(
                "ALTER TABLE {} MODIFY COLUMN {definition}",
                self.quote(table)
            )),
        }
    }

    /// What a `SELECT ... WHERE` that reads rows it will update appends to lock them:
    /// ` FOR UPDATE` on PostgreSQL and MySQL; nothing on SQLite, where the write
    /// transaction already holds the database.
    pub fn row_lock(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            _ => " FOR UPDATE",
        }
    }

    /// How the server selects a column (unquoted): PostgreSQL's `to_json(col)::text`, so
    /// every value reads back as JSON text through one driver call; the quoted column
    /// elsewhere.
    pub fn select_column(self, column: &str) -> String {
        match self {
            Dialect::Postgres => format!("to_json({})::text", self.quote(column)),
            _ => self.quote(column),
        }
    }

    /// Placeholder `n` (1-based) for a value of SQL type `ty` bound as text or a number:
    /// PostgreSQL casts from text (`CAST($n AS ty)`; bytes travel as hex,
    /// `decode($n, 'hex')`); SQLite numbers its placeholders (`?n`); MySQL's are
    /// positional (`?`), so there each value must be bound in order, once. (The reference
    /// server has no MySQL backend; its queries number placeholders out of order, so one
    /// would need numbered binding.)
    pub fn placeholder(self, n: usize, ty: &str) -> String {
        match self {
            Dialect::Postgres if ty == "BYTEA" => format!("decode(${n}, 'hex')"),
            Dialect::Postgres => format!("CAST(${n} AS {ty})"),
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Mysql => "?".to_string(),
        }
    }

    /// Whether a JSON column reads back as JSON text to parse (SQLite, MySQL) rather than
    /// as the value itself (PostgreSQL through [`Dialect::select_column`]).
    pub fn json_reads_as_text(self) -> bool {
        self != Dialect::Postgres
    }

    /// Whether a boolean column reads back as an integer (SQLite).
    pub fn bool_reads_as_int(self) -> bool {
        self == Dialect::Sqlite
    }

    /// Whether a bytes column reads back as PostgreSQL's hex text (`\x0a0b`) rather than
    /// as an array of numbers.
    pub fn bytes_read_as_hex(self) -> bool {
        self == Dialect::Postgres
    }
}

/// The column type (without `NULL`/`NOT NULL`) for a field type in a dialect.
///
/// | logical | SQLite | PostgreSQL | MySQL |
/// |---|---|---|---|
/// | bool | INTEGER | BOOLEAN | BOOLEAN |
/// | i8, i16, u8 | INTEGER | SMALLINT | SMALLINT |
/// | i32, u16 | INTEGER | INTEGER | INT |
/// | i64, u32 | INTEGER | BIGINT | BIGINT |
/// | f32 | REAL | REAL | FLOAT |
/// | f64 | REAL | DOUBLE PRECISION | DOUBLE |
/// | String | TEXT | TEXT | LONGTEXT |
/// | Uuid | TEXT | UUID | CHAR(36) |
/// | `DateTime<Utc>` | TEXT (RFC 3339, microseconds) | TIMESTAMPTZ | DATETIME(6) |
/// | `Vec<u8>` | BLOB | BYTEA | LONGBLOB |
/// | sets, json | TEXT (JSON) | JSONB | JSON |
pub fn column_type(ty: &FieldType, dialect: Dialect) -> &'static str {
    match &ty.kind {
        TypeKind::Scalar { scalar } => scalar_type(*scalar, dialect),
        TypeKind::Set { .. } | TypeKind::Json { .. } => dialect.json_type(),
    }
}

/// The column type of a scalar in a dialect.
pub fn scalar_type(scalar: ScalarType, dialect: Dialect) -> &'static str {
    use Dialect::*;
    use ScalarType as S;
    match (scalar, dialect) {
        (S::Bool, Sqlite) => "INTEGER",
        (S::Bool, _) => "BOOLEAN",
        (S::I8 | S::I16 | S::U8, Sqlite) => "INTEGER",
        (S::I8 | S::I16 | S::U8, _) => "SMALLINT",
        (S::I32 | S::U16, Sqlite | Postgres) => "INTEGER",
        (S::I32 | S::U16, Mysql) => "INT",
        (S::I64 | S::U32, Sqlite) => "INTEGER",
        (S::I64 | S::U32, _) => "BIGINT",
        (S::F32 | S::F64, Sqlite) => "REAL",
        (S::F32, Postgres) => "REAL",
        (S::F32, Mysql) => "FLOAT",
        (S::F64, Postgres) => "DOUBLE PRECISION",
        (S::F64, Mysql) => "DOUBLE",
        (S::String, Mysql) => "LONGTEXT",
        (S::String, _) => "TEXT",
        (S::Uuid, Sqlite) => "TEXT",
        (S::Uuid, Postgres) => "UUID",
        (S::Uuid, Mysql) => "CHAR(36)",
        (S::Timestamp, Sqlite) => "TEXT",
        (S::Timestamp, Postgres) => "TIMESTAMPTZ",
        (S::Timestamp, Mysql) => "DATETIME(6)",
        (S::Bytes, Sqlite) => "BLOB",
        (S::Bytes, Postgres) => "BYTEA",
        (S::Bytes, Mysql) => "LONGBLOB",
    }
}

/// The names of syncgen's metadata tables and columns: the generator creates them, the
/// client store and the server query them, all through these constants. Every name
/// starts with [`crate::RESERVED_PREFIX`] (`sync_`), which model fields may not use.
pub mod meta {
    /// Server: the account a row belongs to.
    pub const ACCOUNT: &str = "sync_account";
    /// Server table: each account's change counter.
    pub const ACCOUNTS: &str = "sync_accounts";
    /// Server table: one row per change, for `GET /changes` and collected deletes.
    pub const CHANGES: &str = "sync_changes";
    /// Client and server: the hybrid logical clock of each `lww` field, as JSON.
    pub const CLOCKS: &str = "sync_clocks";
    /// Client table: unresolved conflicts on `manual` fields.
    pub const CONFLICTS: &str = "sync_conflicts";
    /// Client and server: the row is a tombstone.
    pub const DELETED: &str = "sync_deleted";
    /// Server table: idempotency keys and their stored results.
    pub const IDEMPOTENCY: &str = "sync_idempotency";
    /// Client table: the device's node id, clock and other settings.
    pub const META: &str = "sync_meta";
    /// Client and server table: the applied migrations and the model fingerprint.
    pub const MIGRATIONS: &str = "sync_migrations";
    /// Client table: the durable outbox.
    pub const OUTBOX: &str = "sync_outbox";
    /// Server: the number of the record's last change in its account's change stream.
    pub const SEQ: &str = "sync_seq";
    /// Client and server: when the server last wrote the record (the server's clock).
    pub const SERVER_UPDATED_AT: &str = "sync_server_updated_at";
    /// Client table: each account's change token and snapshot cursor.
    pub const STATE: &str = "sync_state";
    /// Client: where a record stands with the server (`clean`, `pending`, `syncing`, `failed`, `conflicted`).
    pub const STATUS: &str = "sync_status";
    /// Client: the hybrid logical clock stamp of the last local edit.
    pub const UPDATED_AT: &str = "sync_updated_at";
    /// Client and server: the server's version of the record (`NULL` on the client until acknowledged).
    pub const VERSION: &str = "sync_version";
    /// The prefix of a client table holding the base copies of an entity's records
    /// (`sync_base_<table>`).
    pub const BASE_PREFIX: &str = "sync_base_";
    /// The key in [`META`] under which a client migration that added fields or
    /// entities asks the device to fetch their records again (value: a JSON array of
    /// entity wire names).
    pub const REFETCH_KEY: &str = "refetch-after-upgrade";
    /// The key in [`META`] holding where the fetch of an entity's records again stands
    /// (a snapshot cursor); a migration that adds fields removes it, so the fetch starts
    /// over in the new model's shape.
    pub const REFETCH_CURSOR_KEY: &str = "refetch-cursor";

    /// The client table of base copies for the entity table `table`.
    pub fn base_table(table: &str) -> String {
        format!("{BASE_PREFIX}{table}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_the_quote_character() {
        assert_eq!(Dialect::Postgres.quote("order"), "\"order\"");
        assert_eq!(Dialect::Sqlite.quote("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(Dialect::Mysql.quote("ty`pe"), "`ty``pe`");
    }

    #[test]
    fn literals_and_statement_forms() {
        assert_eq!(Dialect::Sqlite.string_literal("it's"), "'it''s'");
        assert_eq!(Dialect::Mysql.string_literal("a\\b'"), "'a\\\\b'''");
        assert_eq!(Dialect::Sqlite.bool_literal(true), "1");
        assert_eq!(Dialect::Postgres.bool_literal(false), "FALSE");
        assert_eq!(
            Dialect::Mysql.timestamp_text("2026-11-30T12:00:00.000000Z"),
            "2026-11-30 12:00:00.000000"
        );
        assert_eq!(
            Dialect::Postgres.timestamp_text("2026-11-30T12:00:00.000000Z"),
            "2026-11-30T12:00:00.000000Z"
        );
        assert_eq!(Dialect::Mysql.drop_index("i", "t"), "DROP INDEX `i` ON `t`");
        assert_eq!(Dialect::Sqlite.drop_index("i", "t"), "DROP INDEX \"i\"");
        assert_eq!(
            Dialect::Mysql.default_clause("JSON", "'[]'"),
            "DEFAULT ('[]')"
        );
        assert_eq!(Dialect::Mysql.default_clause("BIGINT", "0"), "DEFAULT 0");
        assert_eq!(
            Dialect::Sqlite.change_column_type("t", "c", "BIGINT", "x"),
            None
        );
        assert_eq!(
            Dialect::Postgres.placeholder(2, "BYTEA"),
            "decode($2, 'hex')"
        );
        assert_eq!(Dialect::Sqlite.placeholder(2, "TEXT"), "?2");
        assert_eq!(Dialect::Sqlite.row_lock(), "");
        assert_eq!(Dialect::Postgres.select_column("v"), "to_json(\"v\")::text");
    }

    #[test]
    fn every_scalar_has_a_type_in_every_dialect() {
        use ScalarType as S;
        for s in [
            S::Bool,
            S::I8,
            S::I16,
            S::I32,
            S::I64,
            S::U8,
            S::U16,
            S::U32,
            S::F32,
            S::F64,
            S::String,
            S::Uuid,
            S::Timestamp,
            S::Bytes,
        ] {
            for d in Dialect::ALL {
                assert!(!scalar_type(s, d).is_empty());
            }
        }
        assert_eq!(scalar_type(S::U32, Dialect::Postgres), "BIGINT");
        assert_eq!(scalar_type(S::Timestamp, Dialect::Mysql), "DATETIME(6)");
    }
}
