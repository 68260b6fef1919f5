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

/// The bytes of the automerge change that makes the same edit (`title`) to a document
/// holding the same record (its binary change format, as sent by its sync protocol).
/// Returns the change's bytes and those of the sync message that carries it to a peer
/// that has everything else.
fn automerge_change_bytes(t: &Task, new_title: &str) -> (usize, usize) {
    use automerge::sync::SyncDoc;
    use automerge::transaction::Transactable;
    use automerge::{ActorId, AutoCommit, ObjType, ROOT, ScalarValue, sync};
    let mut doc = AutoCommit::new().with_actor(ActorId::from(vec![1u8; 16]));
    doc.put(ROOT, "id", t.id.to_string()).expect("put");
    doc.put(ROOT, "project_id", t.project_id.to_string())
        .expect("put");
    doc.put(ROOT, "title", t.title.as_str()).expect("put");
    doc.put(ROOT, "status", t.status.as_str()).expect("put");
    let tags = doc.put_object(ROOT, "tags", ObjType::Map).expect("put");
    for tag in &t.tags {
        doc.put(&tags, tag.as_str(), true).expect("put");
    }
    doc.put(ROOT, "likes", ScalarValue::counter(t.likes))
        .expect("put");
    doc.put(ROOT, "price_cents", t.price_cents).expect("put");
    doc.put(ROOT, "due", ScalarValue::Null).expect("put");
    let meta = doc.put_object(ROOT, "meta", ObjType::Map).expect("put");
    for (k, v) in &t.meta {
        doc.put(&meta, k.as_str(), v.as_str()).expect("put");
    }
    doc.put(ROOT, "type", t.r#type.as_deref().unwrap_or_default())
        .expect("put");
    doc.commit();
    let mut other = doc.fork().with_actor(ActorId::from(vec![2u8; 16]));
    // Bring both peers' sync states up to date, so the next message carries only the edit.
    let (mut to_doc, mut to_other) = (sync::State::new(), sync::State::new());
    sync_until_quiet(&mut other, &mut to_doc, &mut doc, &mut to_other);
    other.put(ROOT, "title", new_title).expect("put");
    other.commit();
    let mut change = other.get_last_local_change().expect("a change");
    let change_bytes = change.bytes().len();
    let message = other
        .sync()
        .generate_sync_message(&mut to_doc)
        .expect("a message")
        .encode()
        .len();
    (change_bytes, message)
}

/// Runs automerge's sync protocol between two peers until neither has anything to send.
fn sync_until_quiet(
    a: &mut automerge::AutoCommit,
    a_state: &mut automerge::sync::State,
    b: &mut automerge::AutoCommit,
    b_state: &mut automerge::sync::State,
) {
    use automerge::sync::SyncDoc;
    loop {
        let from_a = a.sync().generate_sync_message(a_state);
        let from_b = b.sync().generate_sync_message(b_state);
        if from_a.is_none() && from_b.is_none() {
            return;
        }
        if let Some(m) = from_a {
            b.sync().receive_sync_message(b_state, m).expect("receive");
        }
        if let Some(m) = from_b {
            a.sync().receive_sync_message(a_state, m).expect("receive");
        }
    }
}

fn figures() {
    let t = sync_bench::task(1);
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
    let mutation = sync_runtime::protocol::Mutation {
        idempotency_key: Uuid::now_v7().to_string(),
        entity_type: "task".into(),
        entity_id: t.id,
        op: sync_runtime::protocol::MutationOp::Update,
        base_version: Some(12),
        record: None,
        clocks: None,
        patch: Some(serde_json::to_value(&patch).expect("json")),
        hlc: None,
        dot: None,
        dots: None,
        replaces: None,
        dot_gaps: None,
        transaction: None,
    };
    let mutation_bytes = serde_json::to_vec(&mutation).expect("json").len();
    let body = sync_runtime::protocol::PushRequest {
        mutations: vec![mutation],
    };
    println!(
        "one-field edit: the mutation (key, entity, id, base version, patch) {mutation_bytes} bytes, the whole push body {} bytes",
        serde_json::to_vec(&body).expect("json").len()
    );
    let (change, message) = automerge_change_bytes(&t, &edited.title);
    println!(
        "one-field edit in automerge: change {change} bytes, sync message carrying it {message} bytes"
    );

    // 10k edits over 500 records: coalesced (Task) vs one mutation per edit (Comment is a
    // history entity; its rows are small, so compare mutation counts and the Task patch
    // bytes a history outbox would carry, measured by summing per-edit patches). Twice:
    // edits of a title alone, and edits that also add a like (an item that adds to a
    // `sum` is never composed with a later edit, see the `sync_runtime::store` docs).
    for likes in [false, true] {
        coalescing(likes);
    }
}

fn coalescing(likes: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = sync_bench::store(dir.path(), Durability::Normal);
    let mut tasks: Vec<Task> = (0..500).map(sync_bench::task).collect();
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
        if likes {
            tasks[k].likes += 1;
        }
        let p = Task::diff(&before, &tasks[k], Hlc::new(1, 0, NodeId(1))).expect("diff");
        uncoalesced_bytes += serde_json::to_vec(&serde_json::json!({ "patch": p }))
            .expect("json")
            .len();
        store.update(&tasks[k]).expect("update");
    }
    let outbox = store.outbox().expect("outbox");
    let coalesced_bytes: usize = outbox.iter().map(|i| i.payload.to_string().len()).sum();
    let what = if likes { "title and like" } else { "title" };
    println!(
        "10k {what} edits over 500 records: {} mutations / {coalesced_bytes} bytes coalesced, 10000 mutations / {uncoalesced_bytes} bytes uncoalesced ({:.1}% fewer mutations, {:.1}% fewer bytes)",
        outbox.len(),
        100.0 * (1.0 - outbox.len() as f64 / 10_000.0),
        100.0 * (1.0 - coalesced_bytes as f64 / uncoalesced_bytes as f64)
    );
}

fn bench(c: &mut Criterion) {
    figures();
    let t = sync_bench::task(1);
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
