//! Bytes on the wire and coalescing, measured on the real outbox.
//!
//! - one edit of one field: the patch sent, against the whole record;
//! - 10k draft-style edits over 500 records: the mutations and bytes a coalescing
//!   outbox sends, against one mutation per edit (an `outbox = "history"` twin entity).
//!
//! Prints the figures (criterion times the coalesced write path as well).
//! `cargo bench -p sync-bench --bench wire`

use criterion::{Criterion, criterion_group, criterion_main};
use sync_bench::model::Task;
use sync_runtime::Syncable;
use sync_runtime::prelude::*;
use sync_runtime::store::Durability;

fn task(n: u128) -> Task {
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

fn figures() {
    let t = task(1);
    let mut edited = t.clone();
    edited.title = "Task number 1, edited".into();
    let patch = Task::diff(&t, &edited, Hlc::new(1_800_000_000_000, 0, NodeId(42))).expect("diff");
    let patch_bytes = serde_json::to_vec(&serde_json::json!({ "patch": patch }))
        .expect("json")
        .len();
    let record_bytes =
        serde_json::to_vec(&serde_json::json!({ "record": edited.to_record().expect("record") }))
            .expect("json")
            .len();
    println!("one-field edit: patch {patch_bytes} bytes, whole record {record_bytes} bytes");

    // 10k edits over 500 records: coalesced (Task) vs one mutation per edit (Comment is a
    // history entity; its rows are small, so compare mutation counts and the Task patch
    // bytes a history outbox would carry, measured by summing per-edit patches).
    let dir = tempfile::tempdir().expect("tempdir");
    let store = sync_bench::store(dir.path(), Durability::Normal);
    let mut tasks: Vec<Task> = (0..500).map(task).collect();
    for t in &tasks {
        store.create(t).expect("create");
    }
    // The server acknowledged the creates: later edits are updates.
    let conn = rusqlite::Connection::open(dir.path().join("store.db")).expect("open");
    conn.execute_batch(
        "DELETE FROM sync_outbox; UPDATE tasks SET sync_version = 1, sync_status = 'clean';",
    )
    .expect("ack");
    let mut uncoalesced_bytes = 0usize;
    let mut x = 0u64;
    for edit in 0..10_000usize {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let k = (x >> 33) as usize % tasks.len();
        let before = tasks[k].clone();
        tasks[k].title = format!("draft {edit}");
        tasks[k].likes += 1;
        let p = Task::diff(&before, &tasks[k], Hlc::new(1, 0, NodeId(1))).expect("diff");
        uncoalesced_bytes += serde_json::to_vec(&serde_json::json!({ "patch": p }))
            .expect("json")
            .len();
        store.update(&tasks[k]).expect("update");
    }
    let outbox = store.outbox().expect("outbox");
    let coalesced_bytes: usize = outbox.iter().map(|i| i.payload.to_string().len()).sum();
    println!(
        "10k edits over 500 records: {} mutations / {coalesced_bytes} bytes coalesced, 10000 mutations / {uncoalesced_bytes} bytes uncoalesced ({:.1}% fewer mutations, {:.1}% fewer bytes)",
        outbox.len(),
        100.0 * (1.0 - outbox.len() as f64 / 10_000.0),
        100.0 * (1.0 - coalesced_bytes as f64 / uncoalesced_bytes as f64)
    );
}

fn bench(c: &mut Criterion) {
    figures();
    let t = task(1);
    let hlc = Hlc::new(1, 0, NodeId(1));
    c.bench_function("diff_one_field_and_serialise", |b| {
        let mut edited = t.clone();
        edited.title = "edited".into();
        b.iter(|| {
            serde_json::to_vec(&Task::diff(&t, &edited, hlc).expect("diff"))
                .expect("json")
                .len()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
