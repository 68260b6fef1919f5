//! A local update through the store (diff, typed row, metadata and coalesced outbox in one
//! transaction) beside a raw rusqlite single-row update transaction with the same pragmas.
//!
//! `cargo bench -p sync-bench --bench store_write`

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use sync_bench::model::Task;
use sync_runtime::prelude::*;
use sync_runtime::store::Durability;

fn task() -> Task {
    Task {
        id: Uuid::now_v7(),
        project_id: Uuid::now_v7(),
        title: "benchmark".into(),
        status: "open".into(),
        tags: ["a".to_string(), "b".to_string()].into(),
        likes: 0,
        price_cents: 100,
        due: None,
        meta: Default::default(),
        r#type: Some("chore".into()),
        draft: None,
    }
}

fn bench(c: &mut Criterion) {
    for (name, durability) in [("normal", Durability::Normal), ("full", Durability::Full)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = sync_bench::store(dir.path(), durability);
        let mut t = task();
        store.create(&t).expect("create");
        let raw = sync_bench::raw(dir.path(), durability);
        raw.execute(
            "INSERT INTO tasks (id, project_id, title, status, tags, likes, price_cents, meta, kind, sync_updated_at) VALUES (?1, ?2, 'benchmark', 'open', '[\"a\",\"b\"]', 0, 100, '{}', 'chore', 'x')",
            [t.id.to_string(), t.project_id.to_string()],
        )
        .expect("insert");

        let mut group = c.benchmark_group(format!("local_update_{name}"));
        let mut i = 0u64;
        group.bench_function("raw_rusqlite", |b| {
            b.iter(|| {
                i += 1;
                let tx = raw.unchecked_transaction().expect("begin");
                tx.prepare_cached("UPDATE tasks SET title = ?1, sync_updated_at = ?2, sync_status = 'pending' WHERE id = ?3")
                    .expect("prepare")
                    .execute(rusqlite::params![format!("title {i}"), i.to_string(), t.id.to_string()])
                    .expect("update");
                tx.commit().expect("commit");
            })
        });
        group.bench_function("store", |b| {
            b.iter(|| {
                i += 1;
                t.title = format!("title {i}");
                black_box(store.update(&t).expect("update"));
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
