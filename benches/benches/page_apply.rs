//! Applying a pulled page of 10k changes: the store's whole pull path (upsert of each
//! row with its sync metadata, the base copy, the sync token, one transaction), driven
//! by the real `SyncEngine` over an in-memory transport, beside two baselines in the
//! same run:
//!
//! - a raw rusqlite bulk insert of the same rows into the same table (one prepared
//!   `INSERT` per row, one transaction, the same pragmas);
//! - the floor: `INSERT INTO tasks SELECT * FROM staging`, the same rows copied inside
//!   SQLite without any per-row work in Rust.
//!
//! Each iteration starts from a fresh database file (set up outside the timing).
//!
//! `cargo bench -p sync-bench --bench page_apply`

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use rusqlite::types::Value;
use sync_bench::model::Task;
use sync_runtime::engine::SyncOutcome;
use sync_runtime::protocol::ServerRecord;
use sync_runtime::store::Durability;

const N: usize = 10_000;
const DURABILITY: Durability = Durability::Full;

/// The same rows as column values of the `tasks` table, metadata included.
fn rows(page: &[ServerRecord]) -> Vec<Vec<Value>> {
    page.iter()
        .map(|s| {
            let r = &s.record;
            let text = |k: &str| Value::Text(r[k].as_str().expect("text").to_string());
            let json = |k: &str| Value::Text(r[k].to_string());
            vec![
                text("id"),
                text("project_id"),
                text("title"),
                text("status"),
                json("tags"),
                Value::Integer(r["likes"].as_i64().expect("int")),
                Value::Integer(r["price_cents"].as_i64().expect("int")),
                Value::Null,
                json("meta"),
                text("type"),
                Value::Text(s.clocks.to_string()),
                Value::Text(s.server_updated_at.clone()),
                Value::Text(s.server_updated_at.clone()),
                Value::Integer(s.version),
                Value::Text("clean".into()),
                Value::Integer(0),
            ]
        })
        .collect()
}

const COLUMNS: &str = "\"id\", \"project_id\", \"title\", \"status\", \"tags\", \"likes\", \"price_cents\", \"due\", \"meta\", \"kind\", \"sync_clocks\", \"sync_updated_at\", \"sync_server_updated_at\", \"sync_version\", \"sync_status\", \"sync_deleted\"";

/// Inserts `rows` into `table` (its columns named as in `COLUMNS`), one prepared
/// statement for all of them.
fn insert_rows(tx: &rusqlite::Transaction<'_>, table: &str, rows: &[Vec<Value>]) {
    let mut stmt = tx
        .prepare(&format!(
            "INSERT INTO \"{table}\" ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
        ))
        .expect("prepare");
    for row in rows {
        stmt.execute(rusqlite::params_from_iter(row))
            .expect("insert");
    }
}

fn bench(c: &mut Criterion) {
    let page = sync_bench::pull::page(N);
    let rows = rows(&page);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");

    // The pull path stores exactly what the baselines insert.
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = sync_bench::pull::engine(dir.path(), &page, DURABILITY);
        let outcome = rt.block_on(engine.sync_now()).expect("sync");
        assert!(matches!(outcome, SyncOutcome::Ran(ref r) if r.pulled == N));
        assert_eq!(engine.store().list::<Task>().expect("list").len(), N);
    }

    let mut group = c.benchmark_group("apply_pulled_page_10k");
    group.sample_size(10);
    group.bench_function("raw_rusqlite_bulk_insert", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("tempdir");
                let conn = sync_bench::raw(dir.path(), DURABILITY);
                (dir, conn)
            },
            |(dir, mut conn)| {
                let tx = conn.transaction().expect("tx");
                insert_rows(&tx, "tasks", &rows);
                tx.commit().expect("commit");
                (dir, conn)
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("floor_insert_select", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("tempdir");
                let mut conn = sync_bench::raw(dir.path(), DURABILITY);
                let tx = conn.transaction().expect("tx");
                tx.execute_batch(&format!(
                    "CREATE TABLE \"staging\" AS SELECT {COLUMNS} FROM \"tasks\" WHERE 0"
                ))
                .expect("staging");
                insert_rows(&tx, "staging", &rows);
                tx.commit().expect("commit");
                (dir, conn)
            },
            |(dir, mut conn)| {
                let tx = conn.transaction().expect("tx");
                tx.execute_batch(&format!(
                    "INSERT INTO \"tasks\" ({COLUMNS}) SELECT {COLUMNS} FROM \"staging\""
                ))
                .expect("insert select");
                tx.commit().expect("commit");
                (dir, conn)
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("syncgen_pull_apply", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("tempdir");
                let engine = sync_bench::pull::engine(dir.path(), &page, DURABILITY);
                (dir, engine)
            },
            |(dir, engine)| {
                rt.block_on(engine.sync_now()).expect("sync");
                (dir, engine)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
