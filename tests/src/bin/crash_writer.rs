//! A child process for the crash test: writes to a local store in a loop and prints
//! `committed N` after each commit, until it is killed.
//!
//! Usage: `crash-writer DB_PATH`. Each iteration N creates project N and adds one like to
//! the task with the fixed id, in separate transactions, printing `project N` and
//! `like N` after the respective commit.
//!
//! `crash-writer DB_PATH txn`: each iteration N is one `LocalStore::transaction` that
//! creates project N, then [`TASKS_PER_TXN`] tasks in it, then adds one like to the
//! counter task, sleeping a millisecond between writes (so that most kills land inside
//! a transaction), and prints `txn N` after the commit.

#![allow(missing_docs)]

use tasks::model;

use std::io::Write;

use model::{Project, Task};
use sync_runtime::prelude::*;

/// The task whose `likes` counts committed increments.
pub const COUNTER: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00ff);

/// The tasks each transaction of the `txn` mode creates in its project.
pub const TASKS_PER_TXN: u64 = 4;

/// The id of task `k` of the project of iteration `n` in the `txn` mode.
pub fn txn_task_id(n: u64, k: u64) -> Uuid {
    Uuid::from_u128((u128::from(n) + 1) << 32 | u128::from(k + 1))
}

fn task(id: Uuid, project_id: Uuid, title: String) -> Task {
    Task {
        id,
        project_id,
        title,
        status: "open".into(),
        tags: Default::default(),
        likes: 0,
        price_cents: 0,
        due: None,
        meta: Default::default(),
        r#type: None,
        draft: None,
    }
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: crash-writer DB_PATH [txn]");
    let txn = std::env::args().nth(2).as_deref() == Some("txn");
    let store = tasks::open_store(&path).unwrap();
    let start = store.list::<Project>().unwrap().len() as u64;
    if store.get::<Task>(COUNTER).unwrap().is_none() {
        store
            .create(&task(COUNTER, COUNTER, "counter".into()))
            .unwrap();
    }
    let mut out = std::io::stdout().lock();
    if txn {
        let pause = || std::thread::sleep(std::time::Duration::from_millis(1));
        for n in start.. {
            store
                .transaction(|tx| {
                    let p = Project {
                        id: Uuid::from_u128(u128::from(n) + 1),
                        name: format!("project {n}"),
                        created_at: DateTime::from_timestamp(1_700_000_000 + n as i64, 0).unwrap(),
                    };
                    tx.create(&p)?;
                    for k in 0..TASKS_PER_TXN {
                        pause();
                        tx.create(&task(txn_task_id(n, k), p.id, format!("task {n}.{k}")))?;
                    }
                    pause();
                    let mut t = tx.get::<Task>(COUNTER)?.unwrap();
                    t.likes += 1;
                    tx.update(&t)?;
                    pause();
                    Ok::<_, sync_runtime::store::StoreError>(())
                })
                .unwrap();
            writeln!(out, "txn {n}").unwrap();
            out.flush().unwrap();
        }
    }
    for n in start.. {
        let p = Project {
            id: Uuid::from_u128(u128::from(n) + 1),
            name: format!("project {n}"),
            created_at: DateTime::from_timestamp(1_700_000_000 + n as i64, 0).unwrap(),
        };
        store.create(&p).unwrap();
        writeln!(out, "project {n}").unwrap();
        out.flush().unwrap();
        let mut t = store.get::<Task>(COUNTER).unwrap().unwrap();
        t.likes += 1;
        store.update(&t).unwrap();
        writeln!(out, "like {n}").unwrap();
        out.flush().unwrap();
    }
}
