//! Every generated migration applies to the real database it targets: from scratch, then
//! incrementally across five versions of a model, checking the resulting columns against
//! the model after each step, then down to zero.
//!
//! SQLite always runs; PostgreSQL and MariaDB/MySQL run when `SYNC_TEST_POSTGRES_URL` /
//! `SYNC_TEST_MYSQL_URL` are set (`.ci/run` sets both), and print that they skipped
//! otherwise.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use sqlx::{Connection, Row};
use sync_cli::render::Target;
use sync_model::sql::Dialect;
use sync_model::{Entity, Model};

use common::{V1, v2, v3, v4, v5, v6, write_model};

enum Db {
    Sqlite(rusqlite::Connection),
    Pg(sqlx::PgConnection, String),
    My(sqlx::MySqlConnection, String),
}

impl Db {
    async fn exec(&mut self, sql: &str) {
        match self {
            Db::Sqlite(c) => {
                let tx = c.transaction().unwrap();
                tx.execute_batch(sql)
                    .unwrap_or_else(|e| panic!("{e}\n{sql}"));
                tx.commit().unwrap();
            }
            Db::Pg(c, _) => {
                let mut tx = c.begin().await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut *tx)
                    .await
                    .unwrap_or_else(|e| panic!("{e}\n{sql}"));
                tx.commit().await.unwrap();
            }
            Db::My(c, _) => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut *c)
                    .await
                    .unwrap_or_else(|e| panic!("{e}\n{sql}"));
            }
        }
    }

    /// Column name -> nullable.
    async fn columns(&mut self, table: &str) -> BTreeMap<String, bool> {
        match self {
            Db::Sqlite(c) => {
                let mut stmt = c.prepare(&format!("PRAGMA table_info(\"{table}\")")).unwrap();
                stmt.query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, i64>(3)? == 0 && r.get::<_, i64>(5)? == 0)))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect()
            }
            Db::Pg(c, _) => sqlx::query(
                "SELECT column_name::text, is_nullable::text FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1",
            )
            .bind(table)
            .fetch_all(&mut *c)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1) == "YES"))
            .collect(),
            Db::My(c, _) => sqlx::query(
                "SELECT CAST(column_name AS CHAR), CAST(is_nullable AS CHAR) FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ?",
            )
            .bind(table)
            .fetch_all(&mut *c)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1) == "YES"))
            .collect(),
        }
    }

    async fn tables(&mut self) -> Vec<String> {
        let mut t: Vec<String> = match self {
            Db::Sqlite(c) => {
                let mut stmt = c
                    .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
                    .unwrap();
                stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
            }
            Db::Pg(c, _) => sqlx::query_scalar("SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()")
                .fetch_all(&mut *c)
                .await
                .unwrap(),
            Db::My(c, _) => sqlx::query_scalar("SELECT CAST(table_name AS CHAR) FROM information_schema.tables WHERE table_schema = DATABASE()")
                .fetch_all(&mut *c)
                .await
                .unwrap(),
        };
        t.sort();
        t
    }

    async fn string(&mut self, sql: &str) -> String {
        match self {
            Db::Sqlite(c) => c.query_row(sql, [], |r| r.get(0)).unwrap(),
            // CHAR(n) pads with spaces in PostgreSQL.
            Db::Pg(c, _) => sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql))
                .fetch_one(&mut *c)
                .await
                .unwrap()
                .trim_end()
                .to_string(),
            Db::My(c, _) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(&mut *c)
                .await
                .unwrap(),
        }
    }

    async fn cleanup(self) {
        match self {
            Db::Sqlite(_) => {}
            Db::Pg(mut c, schema) => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA \"{schema}\" CASCADE"
                )))
                .execute(&mut c)
                .await
                .unwrap();
            }
            Db::My(mut c, db) => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE `{db}`")))
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
        }
    }
}

fn unique_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("sg_{}_{nanos}", std::process::id())
}

/// The columns a table must have for `entity` in `target`: name -> nullable.
fn expected_columns(entity: &Entity, target: Target, base: bool) -> BTreeMap<String, bool> {
    let mut cols = BTreeMap::new();
    for f in entity.synced_fields() {
        cols.insert(f.column.clone(), f.ty.nullable);
    }
    let meta: &[(&str, bool)] = match (target, base) {
        (Target::Client, false) => &[
            ("sync_clocks", false),
            ("sync_updated_at", false),
            ("sync_server_updated_at", true),
            ("sync_version", true),
            ("sync_status", false),
            ("sync_deleted", false),
        ],
        (Target::Client, true) => &[
            ("sync_clocks", false),
            ("sync_version", false),
            ("sync_server_updated_at", true),
            ("sync_deleted", false),
        ],
        (Target::Server(_), _) => &[
            ("sync_account", false),
            ("sync_clocks", false),
            ("sync_version", false),
            ("sync_seq", false),
            ("sync_server_updated_at", false),
            ("sync_deleted", false),
        ],
    };
    for (c, n) in meta {
        cols.insert((*c).to_string(), *n);
    }
    cols
}

async fn assert_matches_model(db: &mut Db, model: &Model, target: Target) {
    let toolkit: &[&str] = match target {
        Target::Client => &[
            "sync_conflicts",
            "sync_meta",
            "sync_migrations",
            "sync_outbox",
            "sync_state",
        ],
        Target::Server(_) => &[
            "sync_accounts",
            "sync_changes",
            "sync_idempotency",
            "sync_migrations",
        ],
    };
    let mut expected_tables: Vec<String> = toolkit.iter().map(|s| s.to_string()).collect();
    for e in &model.entities {
        expected_tables.push(e.table.clone());
        assert_eq!(
            db.columns(&e.table).await,
            expected_columns(e, target, false),
            "{target:?} table {}",
            e.table
        );
        if target == Target::Client {
            let base = format!("sync_base_{}", e.table);
            assert_eq!(
                db.columns(&base).await,
                expected_columns(e, target, true),
                "{target:?} table {base}"
            );
            expected_tables.push(base);
        }
    }
    expected_tables.sort();
    assert_eq!(db.tables().await, expected_tables, "{target:?}");
}

fn insert_group(target: Target) -> &'static str {
    match target {
        Target::Client => {
            r#"INSERT INTO "groups" ("id", "label", "sync_updated_at") VALUES ('00000000-0000-7000-8000-000000000001', 'g', 'h')"#
        }
        Target::Server(Dialect::Mysql) => {
            "INSERT INTO `groups` (`sync_account`, `id`, `label`, `sync_clocks`, `sync_version`, `sync_seq`, `sync_server_updated_at`) VALUES ('acc', '00000000-0000-7000-8000-000000000001', 'g', '{}', 1, 1, '2024-01-01 00:00:00')"
        }
        Target::Server(_) => {
            r#"INSERT INTO "groups" ("sync_account", "id", "label", "sync_clocks", "sync_version", "sync_seq", "sync_server_updated_at") VALUES ('acc', '00000000-0000-7000-8000-000000000001', 'g', '{}', 1, 1, '2024-01-01T00:00:00Z')"#
        }
    }
}

async fn run(target: Target, mut db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("gen");
    let versions = [V1.to_string(), v2(), v3(), v4(), v5(), v6()];
    let mut applied: Vec<(String, Option<String>, Model)> = Vec::new();
    let folder = out.join("migrations").join(target.folder());
    for (i, src) in versions.iter().enumerate() {
        let model_path = write_model(dir.path(), src);
        let report = sync_cli::generate(&sync_cli::Options {
            inputs: vec![model_path],
            out_dir: out.clone(),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("version {}: {e}", i + 1));
        let rec = report.migration.expect("every version changes the model");
        assert_eq!(rec.version as usize, i + 1);
        let up = std::fs::read_to_string(folder.join(rec.file_name())).unwrap();
        let down = std::fs::read_to_string(folder.join(rec.down_file_name())).ok();
        db.exec(&up).await;
        let model = sync_cli::read_snapshot(&out.join(sync_cli::SNAPSHOT_FILE))
            .unwrap()
            .unwrap()
            .model;
        assert_matches_model(&mut db, &model, target).await;
        if i == 1 {
            // A row that the next migration must give default values to.
            db.exec(insert_group(target)).await;
            if target == Target::Client {
                // And a create waiting in the outbox, made before the group had them.
                db.exec(&format!(
                    "INSERT INTO sync_outbox (entity_type, entity_id, op, payload, idempotency_key, created_at) VALUES ('group', 'g2', 'create', '{GROUP_CREATE}', 'k1', 'now')"
                ))
                .await;
                // And the dots the server gave a record (see the store's `push.rs`).
                db.exec(
                    r#"INSERT INTO sync_meta (key, value) VALUES ('dots:group:00000000-0000-7000-8000-000000000001', '{"00000000000000aa":3}')"#,
                )
                .await;
            }
        }
        if i == 3 && target == Target::Client {
            // Edits of `order.title` in flight when v5 renames it to `heading`.
            db.exec(&format!(
                "INSERT INTO sync_outbox (entity_type, entity_id, op, payload, idempotency_key, created_at) VALUES ('order', 'o1', 'create', '{ORDER_CREATE}', 'k2', 'now'), ('order', 'o1', 'update', '{ORDER_UPDATE}', 'k3', 'now'); \
                 INSERT INTO sync_conflicts (entity_type, entity_id, field, base, local, remote, detected_at) VALUES ('order', 'o1', 'title', '\"a\"', '\"b\"', '\"c\"', 'now')"
            ))
            .await;
        }
        if target == Target::Client {
            assert_in_flight(&mut db, i + 1).await;
            // The entities the device must fetch again: v2 added `group`, v3 fields of
            // it, v4 a field of `order` (merged with the names not fetched yet), v6
            // renamed `group` to `team`.
            let expected = match i + 1 {
                1 => None,
                2 | 3 => Some(r#"["group"]"#),
                4 | 5 => Some(r#"["group","order"]"#),
                _ => Some(r#"["team","order"]"#),
            };
            if let Some(expected) = expected {
                let refetch = db
                    .string("SELECT value FROM sync_meta WHERE key = 'refetch-after-upgrade'")
                    .await;
                assert_eq!(refetch, expected, "version {}", i + 1);
            }
        }
        if i == 2 {
            assert_eq!(
                db.string(
                    "SELECT CAST(\"priority\" AS CHAR(8)) FROM \"groups\""
                        .replace('"', quote(target))
                        .as_str()
                )
                .await,
                "3"
            );
            assert_eq!(
                db.string(&"SELECT \"note\" FROM \"groups\"".replace('"', quote(target)))
                    .await,
                "it's \\ new"
            );
        }
        let version: String = db
            .string(
                &"SELECT CAST(MAX(\"version\") AS CHAR(8)) FROM \"sync_migrations\""
                    .replace('"', quote(target)),
            )
            .await;
        assert_eq!(version, (i + 1).to_string());
        applied.push((up, down, model));
    }
    // Down to zero, checking the model of each earlier version on the way.
    for i in (0..applied.len()).rev() {
        let down = applied[i]
            .1
            .clone()
            .unwrap_or_else(|| panic!("migration {} has a down file", i + 1));
        db.exec(&down).await;
        if i > 0 {
            assert_matches_model(&mut db, &applied[i - 1].2, target).await;
            if target == Target::Client && i >= 2 {
                assert_in_flight(&mut db, i).await;
            }
        }
    }
    assert_eq!(
        db.tables().await,
        Vec::<String>::new(),
        "down to zero leaves nothing"
    );
    db.cleanup().await;
    let _ = Path::new("");
}

const GROUP_CREATE: &str = r#"{"record":{"id":"g2","label":"g"},"clocks":{"label":"000000000001-00000000-0000000000000001"}}"#;
const ORDER_CREATE: &str = r#"{"record":{"id":"o1","title":"a","select":1},"clocks":{"title":"h1"},"resend_base":{"record":{"title":"z"},"clocks":{"title":"h0"}}}"#;
const ORDER_UPDATE: &str = r#"{"patch":{"title":{"set":"b","base":"a"},"select":{"add":1}}}"#;

/// What the client migrations made of the data in flight inserted above, at model
/// version `version` (reached going up or coming down).
async fn assert_in_flight(db: &mut Db, version: usize) {
    let payload =
        |key: &str| format!("SELECT payload FROM sync_outbox WHERE idempotency_key = '{key}'");
    if version >= 2 {
        let create: serde_json::Value =
            serde_json::from_str(&db.string(&payload("k1")).await).unwrap();
        if version >= 3 {
            // The fields v3 added, with their defaults; the clocks untouched.
            assert_eq!(create["record"]["priority"], 3, "{create}");
            assert_eq!(create["record"]["note"], "it's \\ new", "{create}");
            assert_eq!(
                create["record"]["color"],
                serde_json::Value::Null,
                "{create}"
            );
            assert_eq!(
                create["clocks"]["label"],
                "000000000001-00000000-0000000000000001"
            );
        }
    }
    if version >= 4 {
        let (create, update): (serde_json::Value, serde_json::Value) = (
            serde_json::from_str(&db.string(&payload("k2")).await).unwrap(),
            serde_json::from_str(&db.string(&payload("k3")).await).unwrap(),
        );
        let conflict = db
            .string("SELECT field FROM sync_conflicts WHERE entity_id = 'o1'")
            .await;
        let name = if version >= 5 { "heading" } else { "title" };
        let gone = if version >= 5 { "title" } else { "heading" };
        assert_eq!(create["record"][name], "a", "{create}");
        assert_eq!(create["clocks"][name], "h1", "{create}");
        assert_eq!(create["resend_base"]["record"][name], "z", "{create}");
        assert_eq!(create["resend_base"]["clocks"][name], "h0", "{create}");
        assert_eq!(
            update["patch"][name],
            serde_json::json!({"set": "b", "base": "a"})
        );
        assert_eq!(
            update["patch"]["select"],
            serde_json::json!({"add": 1}),
            "untouched"
        );
        assert_eq!(create["record"]["select"], 1, "untouched");
        for v in [&create["record"], &create["clocks"], &update["patch"]] {
            assert!(v.get(gone).is_none(), "{v}");
        }
        assert_eq!(conflict, name);
    }
    if version >= 2 {
        // v6 renames the entity `group` to `team`: its items in flight follow.
        let entity = db
            .string("SELECT entity_type FROM sync_outbox WHERE idempotency_key = 'k1'")
            .await;
        assert_eq!(entity, if version >= 6 { "team" } else { "group" });
        let dots = db
            .string("SELECT key || ' ' || value FROM sync_meta WHERE key LIKE 'dots:%'")
            .await;
        let entity = if version >= 6 { "team" } else { "group" };
        assert_eq!(
            dots,
            format!(
                r#"dots:{entity}:00000000-0000-7000-8000-000000000001 {{"00000000000000aa":3}}"#
            )
        );
    }
}

fn quote(target: Target) -> &'static str {
    match target.dialect() {
        Dialect::Mysql => "`",
        _ => "\"",
    }
}

#[tokio::test]
async fn client_sqlite() {
    run(
        Target::Client,
        Db::Sqlite(rusqlite::Connection::open_in_memory().unwrap()),
    )
    .await;
}

#[tokio::test]
async fn server_sqlite() {
    run(
        Target::Server(Dialect::Sqlite),
        Db::Sqlite(rusqlite::Connection::open_in_memory().unwrap()),
    )
    .await;
}

#[tokio::test]
async fn server_postgres() {
    let Ok(url) = std::env::var("SYNC_TEST_POSTGRES_URL") else {
        eprintln!("skipped: SYNC_TEST_POSTGRES_URL is not set");
        return;
    };
    let mut c = sqlx::PgConnection::connect(&url)
        .await
        .expect("connect to PostgreSQL");
    let schema = unique_name();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA \"{schema}\"; SET search_path TO \"{schema}\""
    )))
    .execute(&mut c)
    .await
    .unwrap();
    run(Target::Server(Dialect::Postgres), Db::Pg(c, schema)).await;
}

#[tokio::test]
async fn server_mysql() {
    let Ok(url) = std::env::var("SYNC_TEST_MYSQL_URL") else {
        eprintln!("skipped: SYNC_TEST_MYSQL_URL is not set");
        return;
    };
    let mut c = sqlx::MySqlConnection::connect(&url)
        .await
        .expect("connect to MySQL/MariaDB");
    let db = unique_name();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE `{db}`; USE `{db}`"
    )))
    .execute(&mut c)
    .await
    .unwrap();
    run(Target::Server(Dialect::Mysql), Db::My(c, db)).await;
}

#[test]
fn init_migration_creates_every_entity() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), V1);
    let report = sync_cli::generate(&sync_cli::Options {
        inputs: vec![model],
        out_dir: dir.path().join("gen"),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(report.migration.unwrap().name, "init");
    assert_eq!(report.changes.len(), 2);
}
