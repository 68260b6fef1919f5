//! Storage: one SQLite connection (the embedded default) or a PostgreSQL pool, behind
//! the same small interface, so the protocol logic is written once.
//!
//! SQLite work runs on the async runtime's worker threads while holding the connection's
//! lock: statements take microseconds, and SQLite serialises writers anyway. PostgreSQL
//! values are bound as text and cast in SQL, and read back as `to_json(column)`, so one
//! conversion (wire JSON <-> column) serves every type.

use const_format::concatcp;
use std::sync::Arc;
use sync_model::sql::meta;

use serde_json::Value as Json;
use sqlx::Connection as _;
use sync_model::sql::Dialect;
use sync_model::{Field, ScalarType, TypeKind};
use sync_runtime::migrations::Migrations;
use sync_runtime::time;

/// A storage error.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed.
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    /// Stored data or migrations are not what the server expects.
    #[error("{0}")]
    Invalid(String),
}

/// A bound value: a field's [`ColumnValue`](sync_runtime::column::ColumnValue), or a
/// metadata value.
pub(crate) use sync_runtime::column::ColumnValue as Arg;

fn to_sqlite(a: &Arg) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match a {
        Arg::Null => V::Null,
        Arg::Int(i) => V::Integer(*i),
        Arg::Real(f) => V::Real(*f),
        Arg::Text(s) => V::Text(s.clone()),
        Arg::Blob(b) => V::Blob(b.clone()),
        Arg::Bool(b) => V::Integer(i64::from(*b)),
    }
}

/// PostgreSQL binds every value as text, cast in SQL ([`Dialect::placeholder`]).
fn to_pg(a: &Arg) -> Option<String> {
    match a {
        Arg::Null => None,
        Arg::Int(i) => Some(i.to_string()),
        Arg::Real(f) => Some(f.to_string()),
        Arg::Text(s) => Some(s.clone()),
        Arg::Blob(b) => Some(hex::encode(b)),
        Arg::Bool(b) => Some(b.to_string()),
    }
}

/// The database.
#[derive(Clone)]
pub(crate) enum Db {
    Sqlite(Arc<tokio::sync::Mutex<rusqlite::Connection>>),
    Postgres(sqlx::PgPool),
}

/// A transaction.
pub(crate) enum Tx<'a> {
    Sqlite(tokio::sync::MutexGuard<'a, rusqlite::Connection>),
    /// `None` once committed or rolled back.
    Postgres(Option<sqlx::Transaction<'static, sqlx::Postgres>>),
}

impl Db {
    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Db::Sqlite(_) => Dialect::Sqlite,
            Db::Postgres(_) => Dialect::Postgres,
        }
    }

    pub(crate) fn open_sqlite(path: &std::path::Path) -> Result<Self, DbError> {
        let conn = rusqlite::Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.set_prepared_statement_cache_capacity(256);
        Ok(Db::Sqlite(Arc::new(tokio::sync::Mutex::new(conn))))
    }

    pub(crate) async fn connect_postgres(url: &str, max_connections: u32) -> Result<Self, DbError> {
        // Every statement is planned with its parameters (`force_custom_plan`): sqlx keeps
        // prepared statements per connection, and PostgreSQL's generic plan, chosen while
        // a new deployment's tables are empty, would scan them whole once they grow (a
        // primary-key lookup took 6 ms at 10k rows in the push benchmark). Planning these
        // statements costs some tens of microseconds.
        let options: sqlx::postgres::PgConnectOptions = url.parse()?;
        let options = options.options([("plan_cache_mode", "force_custom_plan")]);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(max_connections)
            .connect_with(options)
            .await?;
        Ok(Db::Postgres(pool))
    }

    /// Starts a write transaction (SQLite: `BEGIN IMMEDIATE`, so writers queue at once).
    pub(crate) async fn begin(&self) -> Result<Tx<'_>, DbError> {
        match self {
            Db::Sqlite(m) => {
                let guard = m.lock().await;
                guard.execute_batch("BEGIN IMMEDIATE")?;
                Ok(Tx::Sqlite(guard))
            }
            Db::Postgres(pool) => Ok(Tx::Postgres(Some(pool.begin().await?))),
        }
    }

    /// Applies the migrations the database has not seen, each in one transaction, and
    /// returns every fingerprint recorded in `sync_migrations`, oldest first.
    pub(crate) async fn migrate(&self, migrations: &Migrations) -> Result<Vec<String>, DbError> {
        match self {
            Db::Sqlite(m) => {
                let mut conn = m.lock().await;
                let exists: bool = conn
                    .query_row(
                        concatcp!(
                            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '",
                            meta::MIGRATIONS,
                            "'"
                        ),
                        [],
                        |r| r.get::<_, i64>(0),
                    )
                    .map(|n| n > 0)?;
                let current: i64 = if exists {
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
                check_not_newer(current, migrations)?;
                for f in migrations
                    .files()
                    .iter()
                    .filter(|f| i64::from(f.version) > current)
                {
                    let tx = conn.transaction()?;
                    tx.execute_batch(&f.sql).map_err(|e| {
                        DbError::Invalid(format!(
                            "server migration {:04}_{} failed: {e}",
                            f.version, f.name
                        ))
                    })?;
                    tx.commit()?;
                }
                let mut stmt = conn.prepare(concatcp!(
                    "SELECT \"fingerprint\" FROM \"",
                    meta::MIGRATIONS,
                    "\" ORDER BY \"version\""
                ))?;
                let fps = stmt
                    .query_map([], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(fps)
            }
            Db::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                // One server at a time migrates; the others wait for it.
                sqlx::query("SELECT pg_advisory_lock(727274)")
                    .execute(&mut *conn)
                    .await?;
                let result = async {
                    let exists: bool = sqlx::query_scalar(concatcp!(
                        "SELECT to_regclass('",
                        meta::MIGRATIONS,
                        "') IS NOT NULL"
                    ))
                    .fetch_one(&mut *conn)
                    .await?;
                    let current: i64 = if exists {
                        sqlx::query_scalar(concatcp!(
                            "SELECT COALESCE(MAX(\"version\"), 0)::bigint FROM \"",
                            meta::MIGRATIONS,
                            "\""
                        ))
                        .fetch_one(&mut *conn)
                        .await?
                    } else {
                        0
                    };
                    check_not_newer(current, migrations)?;
                    for f in migrations
                        .files()
                        .iter()
                        .filter(|f| i64::from(f.version) > current)
                    {
                        let mut tx = conn.begin().await?;
                        sqlx::raw_sql(sqlx::AssertSqlSafe(f.sql.to_string()))
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| {
                                DbError::Invalid(format!(
                                    "server migration {:04}_{} failed: {e}",
                                    f.version, f.name
                                ))
                            })?;
                        tx.commit().await?;
                    }
                    let fps: Vec<String> = sqlx::query_scalar(concatcp!(
                        "SELECT \"fingerprint\" FROM \"",
                        meta::MIGRATIONS,
                        "\" ORDER BY \"version\""
                    ))
                    .fetch_all(&mut *conn)
                    .await?;
                    Ok::<_, DbError>(fps)
                }
                .await;
                sqlx::query("SELECT pg_advisory_unlock(727274)")
                    .execute(&mut *conn)
                    .await?;
                result
            }
        }
    }
}

fn check_not_newer(current: i64, migrations: &Migrations) -> Result<(), DbError> {
    let latest = migrations
        .files()
        .last()
        .map_or(0, |f| i64::from(f.version));
    if current > latest {
        return Err(DbError::Invalid(format!(
            "the server database is at migration {current} but this server only knows migrations up to {latest}; it was migrated by a newer server version"
        )));
    }
    Ok(())
}

impl Tx<'_> {
    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Tx::Sqlite(_) => Dialect::Sqlite,
            Tx::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs a query; every column comes back as JSON (see the module docs). In PostgreSQL
    /// the SQL must select `to_json(col)::text` (see [`sel`]).
    pub(crate) async fn query(
        &mut self,
        sql: &str,
        args: &[Arg],
    ) -> Result<Vec<Vec<Json>>, DbError> {
        match self {
            Tx::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(sql)?;
                let n = stmt.column_count();
                let mut rows =
                    stmt.query(rusqlite::params_from_iter(args.iter().map(to_sqlite)))?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    let mut row = Vec::with_capacity(n);
                    for i in 0..n {
                        use rusqlite::types::ValueRef as V;
                        row.push(match r.get_ref(i)? {
                            V::Null => Json::Null,
                            V::Integer(i) => Json::from(i),
                            V::Real(f) => {
                                serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number)
                            }
                            V::Text(t) => Json::String(String::from_utf8_lossy(t).into_owned()),
                            V::Blob(b) => Json::Array(b.iter().map(|x| Json::from(*x)).collect()),
                        });
                    }
                    out.push(row);
                }
                Ok(out)
            }
            Tx::Postgres(tx) => {
                use sqlx::Row;
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()));
                for a in args {
                    q = q.bind(to_pg(a));
                }
                let tx = tx
                    .as_mut()
                    .ok_or_else(|| DbError::Invalid("transaction already finished".into()))?;
                let rows = q.fetch_all(&mut **tx).await?;
                rows.iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| {
                                let text: Option<String> = r.try_get(i)?;
                                Ok(match text {
                                    None => Json::Null,
                                    Some(t) => serde_json::from_str(&t).map_err(|e| {
                                        DbError::Invalid(format!("column {i} is not JSON: {e}"))
                                    })?,
                                })
                            })
                            .collect()
                    })
                    .collect()
            }
        }
    }

    /// Runs a statement and returns the number of rows it changed.
    pub(crate) async fn execute(&mut self, sql: &str, args: &[Arg]) -> Result<u64, DbError> {
        match self {
            Tx::Sqlite(conn) => Ok(conn
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(args.iter().map(to_sqlite)))?
                as u64),
            Tx::Postgres(tx) => {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()));
                for a in args {
                    q = q.bind(to_pg(a));
                }
                let tx = tx
                    .as_mut()
                    .ok_or_else(|| DbError::Invalid("transaction already finished".into()))?;
                Ok(q.execute(&mut **tx).await?.rows_affected())
            }
        }
    }

    /// Runs a statement without arguments that is not kept in the statement caches
    /// (savepoints: frequent, cheap to parse, and they would push the hot queries out).
    pub(crate) async fn execute_uncached(&mut self, sql: &str) -> Result<(), DbError> {
        match self {
            Tx::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            Tx::Postgres(tx) => {
                let tx = tx
                    .as_mut()
                    .ok_or_else(|| DbError::Invalid("transaction already finished".into()))?;
                sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                    .persistent(false)
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }
        }
    }

    pub(crate) async fn commit(mut self) -> Result<(), DbError> {
        match &mut self {
            Tx::Sqlite(conn) => Ok(conn.execute_batch("COMMIT")?),
            Tx::Postgres(tx) => match tx.take() {
                Some(tx) => Ok(tx.commit().await?),
                None => Ok(()),
            },
        }
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        // A transaction dropped without commit (an error, a panic, a cancelled request)
        // is rolled back; sqlx does this itself for PostgreSQL.
        if let Tx::Sqlite(conn) = self
            && !conn.is_autocommit()
        {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
}

/// A quoted identifier.
pub(crate) fn q(d: Dialect, ident: &str) -> String {
    d.quote(ident)
}

/// A column in a SELECT list ([`Dialect::select_column`]).
pub(crate) fn sel(d: Dialect, column: &str) -> String {
    d.select_column(column)
}

/// Placeholder `n` (1-based) for a value of SQL type `ty` ([`Dialect::placeholder`]).
pub(crate) fn ph(d: Dialect, n: usize, ty: &str) -> String {
    d.placeholder(n, ty)
}

/// The bound value of a field's wire value ([`Arg::from_wire`]).
pub(crate) fn encode(field: &Field, v: &Json) -> Result<Arg, String> {
    Arg::from_wire(field, v).map_err(|e| e.to_string())
}

/// The wire value of a column read back (see [`Tx::query`]).
pub(crate) fn decode(d: Dialect, field: &Field, v: Json) -> Result<Json, DbError> {
    if v.is_null() {
        return Ok(Json::Null);
    }
    let bad = || {
        DbError::Invalid(format!(
            "column `{}` holds an unexpected value",
            field.column
        ))
    };
    Ok(match &field.ty.kind {
        TypeKind::Set { .. } | TypeKind::Json { .. } if !d.json_reads_as_text() => v,
        TypeKind::Set { .. } | TypeKind::Json { .. } => {
            serde_json::from_str(v.as_str().ok_or_else(bad)?).map_err(|_| bad())?
        }
        TypeKind::Scalar {
            scalar: ScalarType::Bool,
        } if d.bool_reads_as_int() => Json::Bool(v.as_i64().ok_or_else(bad)? != 0),
        TypeKind::Scalar {
            scalar: ScalarType::Timestamp,
        } => Json::String(
            v.as_str()
                .and_then(time::canonical_lenient)
                .ok_or_else(bad)?,
        ),
        TypeKind::Scalar {
            scalar: ScalarType::Bytes,
        } if d.bytes_read_as_hex() => {
            let digits = v
                .as_str()
                .and_then(|s| s.strip_prefix("\\x"))
                .ok_or_else(bad)?;
            let bytes = hex::decode(digits).map_err(|_| bad())?;
            Json::Array(bytes.into_iter().map(Json::from).collect())
        }
        TypeKind::Scalar {
            scalar: ScalarType::F32 | ScalarType::F64,
        } => Json::from(v.as_f64().ok_or_else(bad)?),
        _ => v,
    })
}
