//! A child process writes to a local store in a loop and is killed with SIGKILL at
//! random moments, 25 times. After each kill the database passes `PRAGMA integrity_check`
//! and every write the child reported as committed is in its row and in the outbox.
#![allow(missing_docs)]

use tasks::model;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use model::{Project, Task};
use sync_runtime::Record;
use sync_runtime::prelude::*;
use sync_runtime::store::{LocalStore, MutationOp};

const COUNTER: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00ff);

fn open(path: &std::path::Path) -> LocalStore {
    tasks::store_builder(path).unwrap().open().unwrap()
}

/// A small deterministic PRNG (xorshift), so a failing run can be repeated.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Runs `crash-writer DB ARGS...`, kills it with SIGKILL after a random 20 to 200 ms,
/// and returns the lines it printed (each a commit it reported).
fn run_until_killed(path: &std::path::Path, args: &[&str], rng: &mut Rng) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash-writer"))
        .arg(path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    std::thread::sleep(Duration::from_millis(20 + rng.next() % 180));
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    reader.join().unwrap()
}

#[test]
fn sigkill_never_loses_a_committed_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let seed = std::env::var("SYNC_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_u64);
    let mut rng = Rng(seed);
    let mut committed_projects = 0u64;
    let mut committed_likes = 0u64;
    for round in 0..25 {
        let lines = run_until_killed(&path, &[], &mut rng);
        for line in &lines {
            if line.starts_with("project ") {
                committed_projects += 1;
            } else if line.starts_with("like ") {
                committed_likes += 1;
            }
        }

        let conn = rusqlite::Connection::open(&path).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok", "round {round} (seed {seed})");
        drop(conn);

        let store = open(&path);
        let projects = store.list::<Project>().unwrap();
        // Every reported commit is there; one more may have committed before its report.
        assert!(
            projects.len() as u64 >= committed_projects
                && projects.len() as u64 <= committed_projects + 1,
            "round {round} (seed {seed}): {} projects, {committed_projects} reported",
            projects.len()
        );
        committed_projects = projects.len() as u64;
        let likes = store.get::<Task>(COUNTER).unwrap().map_or(0, |t| t.likes) as u64;
        assert!(
            likes >= committed_likes && likes <= committed_likes + 1,
            "round {round}: {likes} likes, {committed_likes} reported"
        );
        committed_likes = likes;

        // The outbox holds every write: replaying it gives the local rows. Nothing was
        // sent, so it holds a create per record and, for the counter, an update per like
        // (an item that adds to a `sum` is never composed with a later one).
        let outbox = store.outbox().unwrap();
        let mut replayed: std::collections::BTreeMap<Uuid, Record> = Default::default();
        for item in &outbox {
            match item.op {
                MutationOp::Create => {
                    let record = serde_json::from_value(item.payload["record"].clone()).unwrap();
                    assert!(replayed.insert(item.entity_id, record).is_none());
                }
                MutationOp::Update => {
                    let add = item.payload["patch"]["likes"]["add"]
                        .as_i64()
                        .expect("the writer only adds likes");
                    let r = replayed
                        .get_mut(&item.entity_id)
                        .expect("an update behind its create");
                    let likes = r["likes"].as_i64().unwrap() + add;
                    r.insert("likes".into(), likes.into());
                }
                MutationOp::Delete => panic!("round {round}: the writer deletes nothing"),
            }
        }
        for p in &projects {
            assert_eq!(
                replayed.get(&p.id),
                Some(&p.to_record().unwrap()),
                "round {round}: project in the outbox"
            );
        }
        let counter = store.get::<Task>(COUNTER).unwrap();
        if let Some(t) = &counter {
            assert_eq!(
                replayed.get(&COUNTER),
                Some(&t.to_record().unwrap()),
                "round {round}: counter in the outbox"
            );
        }
        assert_eq!(
            replayed.len(),
            projects.len() + usize::from(counter.is_some())
        );
    }
    assert!(
        committed_projects > 25,
        "the child made progress: {committed_projects}"
    );
}

/// The tasks each transaction of `crash-writer DB txn` creates (its `TASKS_PER_TXN`).
const TASKS_PER_TXN: usize = 4;

/// A child process commits one `LocalStore::transaction` after another (a project, four
/// tasks in it, a like on a counter, with pauses between the writes) and is killed with
/// SIGKILL at random moments, 25 times, most of them inside a transaction. After each
/// kill every transaction is there whole or not at all: each project with its four
/// tasks and the like, each of them with its outbox item, the items of one transaction
/// marked as one (so the engine sends them in one push), and nothing of a transaction
/// the kill interrupted.
#[test]
fn sigkill_in_a_transaction_leaves_all_of_it_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash-txn.db");
    let seed = std::env::var("SYNC_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x7a_u64);
    let mut rng = Rng(seed);
    let mut committed = 0u64;
    for round in 0..25 {
        let lines = run_until_killed(&path, &["txn"], &mut rng);
        committed += lines.iter().filter(|l| l.starts_with("txn ")).count() as u64;

        let conn = rusqlite::Connection::open(&path).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok", "round {round} (seed {seed})");
        drop(conn);

        let store = open(&path);
        let projects = store.list::<Project>().unwrap();
        let n = projects.len() as u64;
        assert!(
            n >= committed && n <= committed + 1,
            "round {round} (seed {seed}): {n} transactions, {committed} reported"
        );
        committed = n;
        let tasks = store.list::<Task>().unwrap();
        let likes = tasks
            .iter()
            .find(|t| t.id == COUNTER)
            .map_or(0, |t| t.likes) as u64;
        assert_eq!(
            likes, n,
            "round {round} (seed {seed}): one like per transaction"
        );
        for p in &projects {
            let mine = tasks.iter().filter(|t| t.project_id == p.id).count();
            assert_eq!(
                mine, TASKS_PER_TXN,
                "round {round} (seed {seed}): {} has {mine} tasks",
                p.name
            );
        }
        assert_eq!(
            tasks.len() as u64,
            n * TASKS_PER_TXN as u64 + u64::from(n > 0 || !tasks.is_empty()),
            "round {round} (seed {seed}): no task without its project"
        );
        // Every record has its items, and a transaction's items are marked as one.
        let outbox = store.outbox().unwrap();
        let mut groups: std::collections::BTreeMap<Uuid, std::collections::BTreeSet<String>> =
            Default::default();
        for item in &outbox {
            let Some(group) = item.payload.get("txn").and_then(|g| g.as_str()) else {
                assert_eq!(
                    item.entity_id, COUNTER,
                    "only the counter's create is alone"
                );
                continue;
            };
            let project = match item.entity_type.as_str() {
                "project" => item.entity_id,
                _ if item.entity_id == COUNTER => continue,
                _ => {
                    tasks
                        .iter()
                        .find(|t| t.id == item.entity_id)
                        .expect("an item of a task that is there")
                        .project_id
                }
            };
            groups.entry(project).or_default().insert(group.to_string());
        }
        assert_eq!(
            groups.len() as u64,
            n,
            "round {round}: a transaction per project"
        );
        assert!(
            groups.values().all(|g| g.len() == 1),
            "round {round}: one transaction's items carry one mark: {groups:?}"
        );
        let marks: std::collections::BTreeSet<_> = groups.values().flatten().collect();
        assert_eq!(
            marks.len() as u64,
            n,
            "round {round}: a mark per transaction"
        );
        // Each transaction's items: its project, its tasks and its like, nothing else.
        for mark in &marks {
            let items = outbox
                .iter()
                .filter(|i| i.payload.get("txn").and_then(|g| g.as_str()) == Some(mark.as_str()))
                .count();
            assert_eq!(
                items,
                TASKS_PER_TXN + 2,
                "round {round}: the items of transaction {mark}"
            );
        }
        let likes_items = outbox
            .iter()
            .filter(|i| i.entity_id == COUNTER && i.op == MutationOp::Update)
            .count() as u64;
        assert_eq!(likes_items, n, "round {round}: an item per like");
    }
    assert!(committed > 10, "the child made progress: {committed}");
}
