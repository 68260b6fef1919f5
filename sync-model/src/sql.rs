//! The one mapping of logical types to each SQL dialect's column types.
//!
//! The CLI's migrations, the runtime's local store and the server's storage all call
//! [`column_type`], so a column is declared and read the same way everywhere.

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
        TypeKind::Set { .. } | TypeKind::Json { .. } => match dialect {
            Dialect::Sqlite => "TEXT",
            Dialect::Postgres => "JSONB",
            Dialect::Mysql => "JSON",
        },
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
