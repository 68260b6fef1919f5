//! Reference server push and pull throughput over 127.0.0.1, on SQLite and PostgreSQL,
//! beside the same rows written and read directly with the database driver.
//!
//! - push: `rows` creates of the example `Task` in batches of 100 (`POST /push` through
//!   the real `HttpTransport`), against inserting the same rows into the server's table
//!   with rusqlite / sqlx, one transaction per 100 rows;
//! - pull: every change from the start (`GET /changes`, pages of 1000), against one
//!   `SELECT` of the same rows through the driver.
//!
//! `cargo run --release -p sync-bench --example server_throughput -- [rows]`
//!
//! PostgreSQL runs when `SYNC_TEST_POSTGRES_URL` is set (each run in a fresh schema).

use std::time::Instant;

use sqlx::Connection;
use sync_runtime::Syncable;
use sync_runtime::engine::{HttpTransport, Transport};
use sync_runtime::prelude::*;
use sync_runtime::protocol::{Mutation, MutationOp, MutationResult, PushRequest};
use sync_server::{Server, ServerBuilder, StaticTokens};
use tasks::model::{Comment, Project, Task};

const ACCOUNT: &str = "bench";
const TOKEN: &str = "bench-token";
const BATCH: usize = 100;

const COLUMNS: &str = "\"sync_account\", \"id\", \"project_id\", \"title\", \"status\", \"tags\", \"likes\", \"price_cents\", \"due\", \"meta\", \"kind\", \"sync_clocks\", \"sync_version\", \"sync_seq\", \"sync_server_updated_at\", \"sync_deleted\"";

fn builder() -> ServerBuilder {
    Server::builder()
        .entity::<Project>()
        .entity::<Task>()
        .entity::<Comment>()
        .token_verifier(StaticTokens::new([(TOKEN, ACCOUNT)]))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rows: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("server.db");
        let server = builder()
            .open_sqlite(&db, tasks::server_sqlite_migrations()?)
            .await?;
        let (push, pull) = through_server(server, rows).await?;
        let (dpush, dpull) = direct_sqlite(&dir.path().join("direct.db"), rows)?;
        report("SQLite", rows, push, pull, dpush, dpull);

        match std::env::var("SYNC_TEST_POSTGRES_URL") {
            Ok(base) => {
                let url = fresh_schema(&base).await?;
                let server = builder()
                    .connect_postgres(&url, tasks::server_postgres_migrations()?)
                    .await?;
                let (push, pull) = through_server(server, rows).await?;
                let url = fresh_schema(&base).await?;
                let (dpush, dpull) = direct_postgres(&url, rows).await?;
                report("PostgreSQL", rows, push, pull, dpush, dpull);
            }
            Err(_) => println!("PostgreSQL: skipped (SYNC_TEST_POSTGRES_URL is not set)"),
        }
        Ok(())
    })
}

fn report(db: &str, rows: usize, push: f64, pull: f64, dpush: f64, dpull: f64) {
    let rate = |s: f64| rows as f64 / s;
    println!(
        "{db}: push {:.0} rows/s vs driver {:.0} rows/s ({:.1}x the direct time); pull {:.0} rows/s vs driver {:.0} rows/s ({:.1}x)",
        rate(push),
        rate(dpush),
        push / dpush,
        rate(pull),
        rate(dpull),
        pull / dpull
    );
}

/// The `k`th task as a create mutation.
fn create(k: usize) -> Mutation {
    let t = sync_bench::task(k as u128);
    let hlc = Hlc::new(1_800_000_000_000 + k as u64, 0, NodeId(9));
    Mutation {
        idempotency_key: Uuid::from_u128(0xbe00_0000 + k as u128).to_string(),
        entity_type: "task".into(),
        entity_id: t.id,
        op: MutationOp::Create,
        base_version: None,
        record: Some(t.to_record().expect("record")),
        clocks: Some(serde_json::to_value(<Task as Syncable>::Clocks::all(hlc)).expect("clocks")),
        patch: None,
        hlc: None,
        dot: None,
        dots: None,
        replaces: None,
        dot_gaps: None,
        transaction: None,
    }
}

/// Pushes `rows` creates, then pulls every change; returns both durations in seconds.
async fn through_server(
    server: Server,
    rows: usize,
) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let fingerprint = server.fingerprint().to_string();
    let serving = tokio::spawn(async move { axum::serve(listener, server.router()).await });
    let transport = HttpTransport::new(url)?.fingerprint(fingerprint);
    let batches: Vec<PushRequest> = (0..rows)
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .map(|c| PushRequest {
            mutations: c.iter().map(|&k| create(k)).collect(),
        })
        .collect();
    let start = Instant::now();
    for batch in &batches {
        let response = transport.push(TOKEN, batch).await?;
        if let Some(bad) = response
            .results
            .iter()
            .find(|r| !matches!(r, MutationResult::Applied { .. }))
        {
            return Err(format!("push: {bad:?}").into());
        }
    }
    let push = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut since: Option<String> = None;
    let mut pulled = 0;
    loop {
        let page = transport.changes(TOKEN, since.as_deref(), 1000).await?;
        pulled += page.changes.len();
        since = Some(page.next_token);
        if !page.has_more {
            break;
        }
    }
    let pull = start.elapsed().as_secs_f64();
    serving.abort();
    if pulled != rows {
        return Err(format!("pulled {pulled} of {rows}").into());
    }
    Ok((push, pull))
}

/// The values of the server's `tasks` row for the `k`th task.
fn values(k: usize) -> (String, String, String) {
    let t = sync_bench::task(k as u128);
    let hlc = Hlc::new(1_800_000_000_000 + k as u64, 0, NodeId(9));
    (
        t.id.to_string(),
        t.title,
        serde_json::to_string(&<Task as Syncable>::Clocks::all(hlc)).expect("clocks"),
    )
}

fn direct_sqlite(
    path: &std::path::Path,
    rows: usize,
) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let mut conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    for m in tasks::server_sqlite_migrations()?.files() {
        conn.execute_batch(&m.sql)?;
    }
    let rows_values: Vec<_> = (0..rows).map(values).collect();
    let start = Instant::now();
    for (b, chunk) in rows_values.chunks(BATCH).enumerate() {
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(&format!(
                "INSERT INTO \"tasks\" ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, 'open', '[\"home\",\"weekend\"]', 3, 1999, NULL, '{{\"color\":\"blue\"}}', 'chore', ?5, 1, ?6, '2026-11-24T12:00:00.000Z', 0)"
            ))?;
            for (i, (id, title, clocks)) in chunk.iter().enumerate() {
                stmt.execute(rusqlite::params![
                    ACCOUNT,
                    id,
                    Uuid::from_u128(7).to_string(),
                    title,
                    clocks,
                    (b * BATCH + i) as i64 + 1
                ])?;
            }
        }
        tx.commit()?;
    }
    let push = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM \"tasks\" WHERE \"sync_account\" = ?1 ORDER BY \"sync_seq\""
    ))?;
    let mut n = 0usize;
    let mut it = stmt.query([ACCOUNT])?;
    while let Some(r) = it.next()? {
        let title: String = r.get(3)?;
        n += usize::from(!title.is_empty());
    }
    let pull = start.elapsed().as_secs_f64();
    assert_eq!(n, rows);
    Ok((push, pull))
}

async fn direct_postgres(url: &str, rows: usize) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    for m in tasks::server_postgres_migrations()?.files() {
        sqlx::raw_sql(sqlx::AssertSqlSafe(m.sql.clone()))
            .execute(&mut conn)
            .await?;
    }
    let rows_values: Vec<_> = (0..rows).map(values).collect();
    let insert = format!(
        "INSERT INTO \"tasks\" ({COLUMNS}) VALUES ($1, CAST($2 AS uuid), CAST($3 AS uuid), $4, 'open', CAST('[\"home\",\"weekend\"]' AS jsonb), 3, 1999, NULL, CAST('{{\"color\":\"blue\"}}' AS jsonb), 'chore', CAST($5 AS jsonb), 1, $6, now(), false)"
    );
    let start = Instant::now();
    for (b, chunk) in rows_values.chunks(BATCH).enumerate() {
        let mut tx = conn.begin().await?;
        for (i, (id, title, clocks)) in chunk.iter().enumerate() {
            sqlx::query(sqlx::AssertSqlSafe(insert.as_str()))
                .bind(ACCOUNT)
                .bind(id)
                .bind(Uuid::from_u128(7).to_string())
                .bind(title)
                .bind(clocks)
                .bind((b * BATCH + i) as i64 + 1)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    }
    let push = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let all = sqlx::query(
        "SELECT \"id\"::text, \"title\", \"sync_clocks\"::text FROM \"tasks\" WHERE \"sync_account\" = $1 ORDER BY \"sync_seq\"",
    )
    .bind(ACCOUNT)
    .fetch_all(&mut conn)
    .await?;
    let pull = start.elapsed().as_secs_f64();
    assert_eq!(all.len(), rows);
    Ok((push, pull))
}

/// A fresh PostgreSQL schema; returns the URL that uses it.
async fn fresh_schema(base: &str) -> Result<String, Box<dyn std::error::Error>> {
    let schema = format!("bench_{}", Uuid::new_v4().simple());
    let mut c = sqlx::PgConnection::connect(base).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&mut c)
        .await?;
    let sep = if base.contains('?') { '&' } else { '?' };
    Ok(format!("{base}{sep}options=-csearch_path%3D{schema}"))
}
