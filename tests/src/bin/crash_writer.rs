//! A child process for the crash test: writes to a local store in a loop and prints
//! `committed N` after each commit, until it is killed.
//!
//! Usage: `crash-writer DB_PATH`. Each iteration N creates project N and adds one like to
//! the task with the fixed id, in separate transactions, printing `project N` and
//! `like N` after the respective commit.

#![allow(missing_docs)]

use tasks::model;

use std::io::Write;

use model::{Project, Task};
use sync_runtime::prelude::*;

/// The task whose `likes` counts committed increments.
pub const COUNTER: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00ff);

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: crash-writer DB_PATH");
    let store = tasks::open_store(&path).unwrap();
    let start = store.list::<Project>().unwrap().len() as u64;
    if store.get::<Task>(COUNTER).unwrap().is_none() {
        store
            .create(&Task {
                id: COUNTER,
                project_id: COUNTER,
                title: "counter".into(),
                status: "open".into(),
                tags: Default::default(),
                likes: 0,
                price_cents: 0,
                due: None,
                meta: Default::default(),
                r#type: None,
                draft: None,
            })
            .unwrap();
    }
    let mut out = std::io::stdout().lock();
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
