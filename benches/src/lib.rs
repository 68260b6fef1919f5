//! Shared set-up for syncgen's benchmarks (see `BENCHMARKS.md` at the repository root).
//!
//! Every benchmark measures syncgen beside a baseline in the same run, so the figures
//! that matter are ratios, which stay meaningful on a noisy machine.

#![allow(missing_docs)]

pub mod model {
    include!("../../examples/tasks/src/model.rs");
}

use model::{Comment, Project, Task};
use sync_runtime::store::{Durability, LocalStore, Migrations};

/// The example app's client migrations.
pub fn migrations() -> Migrations {
    Migrations::embedded(include!(
        "../../examples/tasks/generated/client_migrations.rs"
    ))
    .expect("embedded migrations")
}

/// A store on a fresh file in `dir`.
pub fn store(dir: &std::path::Path, durability: Durability) -> LocalStore {
    LocalStore::builder(dir.join("store.db"))
        .entity::<Project>()
        .entity::<Task>()
        .entity::<Comment>()
        .migrations(migrations())
        .durability(durability)
        .open()
        .expect("open store")
}

/// A raw connection to a fresh file with the same schema and pragmas as the store.
pub fn raw(dir: &std::path::Path, durability: Durability) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(dir.join("raw.db")).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    conn.pragma_update(
        None,
        "synchronous",
        match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        },
    )
    .expect("synchronous");
    for m in migrations().files() {
        conn.execute_batch(&m.sql).expect("migrate");
    }
    conn
}
