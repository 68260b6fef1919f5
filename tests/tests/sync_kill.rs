//! A client process syncing with the server over HTTP is killed with SIGKILL at random
//! moments, 50 times, and restarted. Afterwards it drains its outbox, and the server
//! holds exactly what the client committed: the counter counted every like once, every
//! project arrived once, and the client equals the server.
#![allow(missing_docs)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::model::{Project, Task};
use sync_runtime::prelude::*;
use sync_runtime::store::Migrations;
use sync_server::{Server, StaticTokens};

const COUNTER: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0c0c);

fn child(db: &std::path::Path, url: &str, mode: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_sync-child"))
        .args([db.to_str().unwrap(), url, mode])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_sync_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::builder()
        .entity::<Project>()
        .entity::<Task>()
        .entity::<support::model::Comment>()
        .token_verifier(StaticTokens::new([("kill-token", "kill-account")]))
        .open_sqlite(
            dir.path().join("server.db"),
            Migrations::embedded(include!(
                "../../examples/tasks/generated/server_sqlite_migrations.rs"
            ))
            .unwrap(),
        )
        .await
        .unwrap();
    let url = support::serve(&server).await;
    let db = dir.path().join("client.db");
    let mut seed: u64 = std::env::var("SYNC_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6b11);
    let mut reported = 0u64;
    for _ in 0..50 {
        let mut c = child(&db, &url, "run");
        let stdout = c.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter(|l| l.starts_with("like "))
                .count()
        });
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(30 + seed % 170)).await;
        c.kill().unwrap();
        c.wait().unwrap();
        reported += reader.join().unwrap() as u64;
    }
    let d = child(&db, &url, "drain");
    let status = tokio::task::spawn_blocking(move || d.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("drained"),
        "{status:?}"
    );

    let store = tasks::store_builder(&db).unwrap().open().unwrap();
    let local_likes = store.get::<Task>(COUNTER).unwrap().unwrap().likes as u64;
    assert!(
        local_likes >= reported,
        "every reported like is committed: {local_likes} < {reported}"
    );
    assert!(reported > 50, "the child made progress: {reported}");
    assert!(store.outbox().unwrap().is_empty());

    // The server, through the protocol: exactly the client's state.
    let c = support::Client::new(&url, "kill-token");
    let (changes, _) = c.pull_all(None, 1000).await;
    let server_state = support::latest(&changes);
    let server_likes = server_state[&COUNTER.to_string()]["record"]["likes"]
        .as_i64()
        .unwrap() as u64;
    assert_eq!(server_likes, local_likes, "every like counted exactly once");
    let projects = store.list::<Project>().unwrap();
    let server_projects = server_state
        .values()
        .filter(|r| r["entity_type"] == "project")
        .count();
    assert_eq!(server_projects, projects.len(), "every project once");
    for p in &projects {
        let record = server_state[&p.id.to_string()]["record"]
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(&Project::from_record(&record).unwrap(), p);
    }
}
