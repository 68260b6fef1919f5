//! Applies one pulled page of changes through the engine, for profiling:
//! `perf record -g target/release/examples/profile_pull 10000` or
//! `valgrind --tool=callgrind target/release/examples/profile_pull 2000`.

use sync_runtime::store::Durability;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let page = sync_bench::pull::page(n);
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = sync_bench::pull::engine(dir.path(), &page, Durability::Normal);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let outcome = rt.block_on(engine.sync_now()).expect("sync");
    println!("{outcome:?}");
}
