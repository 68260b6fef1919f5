//! A client process for the kill test: edits its local store and syncs with a server in
//! a loop, until it is killed.
//!
//! Usage: `sync-child DB_PATH SERVER_URL run|drain`. `run` loops forever: one like on the
//! counter task (printing `like N` after the local commit), a new project now and then,
//! and a sync. `drain` syncs until nothing is pending, then prints `drained`.

#![allow(missing_docs)]

use tasks::model;

use std::io::Write;

use model::{Project, Task};
use sync_runtime::engine::{EngineConfig, HttpTransport, SyncEngine};
use sync_runtime::prelude::*;

const COUNTER: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0c0c);

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (path, url, mode) = (
        args.next().unwrap(),
        args.next().unwrap(),
        args.next().unwrap(),
    );
    let store = tasks::store_builder(&path).unwrap().open().unwrap();
    let mut cfg = EngineConfig::new("kill-account", "kill-token");
    cfg.backoff_base = std::time::Duration::ZERO;
    cfg.backoff_cap = std::time::Duration::ZERO;
    cfg.max_attempts = 1_000_000;
    let transport = HttpTransport::new(&url)
        .unwrap()
        .fingerprint(store.fingerprint());
    let engine = SyncEngine::new(store.clone(), transport, cfg);
    let mut out = std::io::stdout().lock();
    if mode == "drain" {
        for _ in 0..100 {
            engine.sync_now().await.unwrap();
            if store.status().unwrap().pending == 0 {
                writeln!(out, "drained").unwrap();
                return;
            }
        }
        panic!("never drained: {:?}", store.status().unwrap());
    }
    let project = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0a0a);
    if store.get::<Task>(COUNTER).unwrap().is_none()
        && store.record_meta::<Task>(COUNTER).unwrap().is_none()
    {
        store
            .create(&Task {
                id: COUNTER,
                project_id: project,
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
    for n in 0u64.. {
        let mut t = store.get::<Task>(COUNTER).unwrap().unwrap();
        t.likes += 1;
        store.update(&t).unwrap();
        writeln!(out, "like {n}").unwrap();
        out.flush().unwrap();
        if n % 3 == 0 {
            store
                .create(&Project {
                    id: Uuid::now_v7(),
                    name: format!("p{n}"),
                    created_at: Utc::now(),
                })
                .unwrap();
        }
        engine.sync_now().await.unwrap();
    }
}
