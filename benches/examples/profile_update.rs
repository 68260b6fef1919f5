//! Runs many local updates, for profiling with callgrind:
//! `valgrind --tool=callgrind target/release/examples/profile_update`.

use sync_bench::model::Task;
use sync_runtime::prelude::*;
use sync_runtime::store::Durability;

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = sync_bench::store(dir.path(), Durability::Normal);
    let mut t = Task {
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
    };
    store.create(&t).expect("create");
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    for i in 0..n {
        t.title = format!("title {i}");
        store.update(&t).expect("update");
    }
}
