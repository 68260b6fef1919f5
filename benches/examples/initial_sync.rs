//! Initial sync of many rows from the reference server over 127.0.0.1, with the client's
//! peak memory.
//!
//! The server runs in a child process (this same binary, `serve` mode) on a SQLite
//! database filled directly with `rows` tasks, so the client's peak RSS (`VmHWM`) is the
//! client's alone. The client is the real `SyncEngine` with the real `HttpTransport` on a
//! fresh `LocalStore` (synchronous = FULL, the default), pulling the snapshot page by page.
//!
//! `cargo run --release -p sync-bench --example initial_sync -- 1000000 [page_size]`
//!
//! Prints rows/s and the peak RSS; compare the rows/s with the page-apply benchmark
//! (`cargo bench -p sync-bench --bench page_apply`), the same work without the network.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use sync_runtime::Syncable;
use sync_runtime::engine::{EngineConfig, HttpTransport, SyncEngine, SyncOutcome};
use sync_runtime::prelude::*;
use sync_server::{Server, StaticTokens};
use tasks::model::{Comment, Project, Task};

const ACCOUNT: &str = "bench";
const TOKEN: &str = "bench-token";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        return serve(&args[2], args[3].parse()?);
    }
    let rows: usize = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let page: u32 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(500);
    client(rows, page)
}

/// The client: spawns the server, syncs into a fresh store, reports.
fn client(rows: usize, page: u32) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let server_db = dir.path().join("server.db");
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "serve",
            server_db.to_str().ok_or("path")?,
            &rows.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("stdout")?).read_line(&mut line)?;
    let url = line
        .trim()
        .strip_prefix("listening ")
        .ok_or_else(|| format!("server said {line:?}"))?
        .to_string();

    let rss_before = peak_rss_kib();
    let store = tasks::open_store(dir.path().join("client.db"))?;
    let transport = HttpTransport::new(url)?.fingerprint(store.fingerprint());
    let mut config = EngineConfig::new(ACCOUNT, TOKEN);
    config.page_size = page;
    let engine = SyncEngine::new(store, transport, config);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let start = Instant::now();
    let outcome = rt.block_on(engine.sync_now())?;
    let elapsed = start.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    let SyncOutcome::Ran(report) = outcome else {
        return Err("sync did not run".into());
    };
    if report.pulled != rows || report.paused.is_some() {
        return Err(format!("pulled {} of {rows} rows ({report:?})", report.pulled).into());
    }
    let peak = peak_rss_kib();
    println!(
        "initial sync: {rows} rows in {:.2} s = {:.0} rows/s (page size {page}); client peak RSS {:.1} MB (before the sync {:.1} MB)",
        elapsed.as_secs_f64(),
        rows as f64 / elapsed.as_secs_f64(),
        peak as f64 / 1024.0,
        rss_before as f64 / 1024.0,
    );
    Ok(())
}

/// The server: a SQLite database with `rows` tasks of one account, served on 127.0.0.1.
fn serve(db: &str, rows: usize) -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let server = Server::builder()
            .entity::<Project>()
            .entity::<Task>()
            .entity::<Comment>()
            .token_verifier(StaticTokens::new([(TOKEN, ACCOUNT)]))
            .open_sqlite(db, tasks::server_sqlite_migrations()?)
            .await?;
        fill(db, rows)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening http://{}", listener.local_addr()?);
        axum::serve(listener, server.router()).await?;
        Ok(())
    })
}

/// Writes `rows` tasks straight into the server's tables (as if pushed long ago).
fn fill(db: &str, rows: usize) -> Result<(), Box<dyn std::error::Error>> {
    let mut conn = rusqlite::Connection::open(db)?;
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare(
            "INSERT INTO \"tasks\" (\"sync_account\", \"id\", \"project_id\", \"title\", \"status\", \"tags\", \"likes\", \"price_cents\", \"due\", \"meta\", \"kind\", \"sync_clocks\", \"sync_version\", \"sync_seq\", \"sync_server_updated_at\", \"sync_deleted\") VALUES (?1, ?2, ?3, ?4, 'open', '[\"home\",\"weekend\"]', 3, 1999, NULL, '{\"color\":\"blue\"}', 'chore', ?5, 1, ?6, '2026-11-24T12:00:00.000Z', 0)",
        )?;
        let project = Uuid::from_u128(7).to_string();
        for k in 0..rows {
            let hlc = Hlc::new(1_800_000_000_000 + k as u64, 0, NodeId(7));
            let clocks = serde_json::to_string(&<Task as Syncable>::Clocks::all(hlc))?;
            stmt.execute(rusqlite::params![
                ACCOUNT,
                Uuid::from_u128(k as u128 + 1).to_string(),
                project,
                format!("Task number {k}"),
                clocks,
                k as i64 + 1,
            ])?;
        }
    }
    tx.execute(
        "INSERT INTO \"sync_accounts\" (\"sync_account\", \"last_seq\", \"horizon_seq\") VALUES (?1, ?2, 0)",
        rusqlite::params![ACCOUNT, rows as i64],
    )?;
    tx.commit()?;
    Ok(())
}

/// The process's peak resident set size (`VmHWM`), in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
