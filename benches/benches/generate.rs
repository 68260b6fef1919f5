//! `sync-cli generate` for 1, 100 and 1000 entities, beside `syn::parse_file` of the same
//! source (the floor: generating cannot be cheaper than reading the source).
//!
//! `cargo bench -p sync-bench --bench generate`
//!
//! Each `generate` writes into a fresh, empty folder, made and removed outside the timing.

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};

fn source(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!(
            "/// Entity {i}.\n#[derive(Syncable)]\npub struct Entity{i} {{\n    #[sync(id)]\n    pub id: Uuid,\n    pub title: String,\n    #[sync(merge = \"sum\")]\n    pub count: i64,\n    #[sync(merge = \"union\")]\n    pub tags: BTreeSet<String>,\n    #[sync(merge = \"manual\")]\n    pub price: i64,\n    pub due: Option<DateTime<Utc>>,\n}}\n\n"
        ));
    }
    s
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("generate");
    group.sample_size(10);
    for n in [1usize, 100, 1000] {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = source(n);
        let path = dir.path().join("model.rs");
        std::fs::write(&path, &src).expect("write");
        group.bench_with_input(BenchmarkId::new("syn_parse_file", n), &src, |b, src| {
            b.iter(|| syn::parse_file(src).expect("parses").items.len())
        });
        group.bench_with_input(
            BenchmarkId::new("sync_cli_generate", n),
            &path,
            |b, path| {
                // The fresh output folder is made before, and deleted after, the timed part
                // (criterion drops the routine's outputs untimed): creating and removing
                // folders is the harness's cost, not generate's, and on ext4 removing the
                // output tree alone takes longer than generating a small model.
                b.iter_batched(
                    || tempfile::tempdir().expect("tempdir"),
                    |out| {
                        let written = sync_cli::generate(&sync_cli::Options {
                            inputs: vec![path.clone()],
                            out_dir: out.path().to_path_buf(),
                            ..Default::default()
                        })
                        .expect("generates")
                        .written
                        .len();
                        (out, written)
                    },
                    BatchSize::PerIteration,
                )
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
