//! Shared set-up for syncgen's benchmarks (see `BENCHMARKS.md` at the repository root).
//!
//! Every benchmark measures syncgen beside a baseline in the same run, so the figures
//! that matter are ratios, which stay meaningful on a noisy machine.

#![allow(missing_docs)]

pub use tasks::model;

use model::{Comment, Project, Task};
use sync_runtime::store::{Durability, LocalStore, Migrations};

/// The `n`th task of the benchmarks' data sets (a realistic record: every field set).
pub fn task(n: u128) -> Task {
    use sync_runtime::prelude::Uuid;
    Task {
        id: Uuid::from_u128(n + 1),
        project_id: Uuid::from_u128(7),
        title: format!("Task number {n}"),
        status: "open".into(),
        tags: ["home".to_string(), "weekend".to_string()].into(),
        likes: 3,
        price_cents: 1999,
        due: None,
        meta: [("color".to_string(), "blue".to_string())].into(),
        r#type: Some("chore".into()),
        draft: None,
    }
}

/// The example app's client migrations.
pub fn migrations() -> Migrations {
    tasks::client_migrations().expect("embedded migrations")
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

/// A pulled page served from memory, for the page-apply benchmark and its profile.
pub mod pull {
    use std::sync::Mutex;

    use sync_runtime::Syncable;
    use sync_runtime::engine::{EngineConfig, SyncEngine, Transport, TransportError};
    use sync_runtime::prelude::*;
    use sync_runtime::protocol::{
        ChangesResponse, PushRequest, PushResponse, ServerRecord, SnapshotResponse,
    };
    use sync_runtime::store::Durability;

    use crate::model::Task;

    /// The records a server would send: the example `Task`, one version each.
    pub fn page(n: usize) -> Vec<ServerRecord> {
        (0..n)
            .map(|k| {
                let t = crate::task(k as u128);
                let hlc = Hlc::new(1_800_000_000_000 + k as u64, 0, NodeId(7));
                ServerRecord {
                    entity_type: "task".into(),
                    entity_id: t.id,
                    version: 1,
                    server_updated_at: "2026-11-24T12:00:00.000Z".into(),
                    deleted: false,
                    record: t.to_record().expect("record"),
                    clocks: serde_json::to_value(<Task as Syncable>::Clocks::all(hlc))
                        .expect("clocks"),
                    dots: None,
                    dot_gaps: None,
                    life_since: None,
                }
            })
            .collect()
    }

    /// Serves one snapshot page (taken, not cloned, so the transport costs nothing).
    pub struct OnePage(Mutex<Option<SnapshotResponse>>);

    impl Transport for OnePage {
        async fn push(&self, _: &str, _: &PushRequest) -> Result<PushResponse, TransportError> {
            Ok(PushResponse { results: vec![] })
        }
        async fn changes(
            &self,
            _: &str,
            since: Option<&str>,
            _: u32,
        ) -> Result<ChangesResponse, TransportError> {
            Ok(ChangesResponse {
                changes: vec![],
                next_token: since.unwrap_or("t1").to_string(),
                has_more: false,
            })
        }
        async fn snapshot(
            &self,
            _: &str,
            _: Option<&str>,
            _: u32,
        ) -> Result<SnapshotResponse, TransportError> {
            Ok(self.0.lock().expect("lock").take().expect("one snapshot"))
        }
        async fn health(&self) -> Result<(), TransportError> {
            Ok(())
        }
    }

    /// An engine on a fresh store whose transport holds `page` as the whole snapshot.
    pub fn engine(
        dir: &std::path::Path,
        page: &[ServerRecord],
        durability: Durability,
    ) -> SyncEngine<OnePage> {
        let store = crate::store(dir, durability);
        let transport = OnePage(Mutex::new(Some(SnapshotResponse {
            records: page.to_vec(),
            next_cursor: None,
            has_more: false,
            token: "t1".into(),
            estimated_total: None,
        })));
        let mut config = EngineConfig::new("bench", "token");
        config.page_size = page.len() as u32;
        SyncEngine::new(store, transport, config)
    }
}
