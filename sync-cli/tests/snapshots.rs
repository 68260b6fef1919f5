//! insta snapshots of every generated file, one folder per case under
//! `tests/snapshots/<case>/`. `tests/apply.rs` proves the same output applies to real
//! databases; these snapshots make every change to it visible in review.
//!
//! Regenerate deliberately with `INSTA_UPDATE=always cargo test -p sync-cli --test snapshots`
//! and read the diff.

mod common;

use std::path::Path;

use common::{V1, tree, v2, v3, v4, v5, v6, write_model};

fn generate(dir: &Path, src: &str) {
    let model = write_model(dir, src);
    sync_cli::generate(&sync_cli::Options {
        inputs: vec![model],
        out_dir: dir.join("gen"),
        ..Default::default()
    })
    .unwrap();
}

/// Snapshots every file the last generation wrote (those starting with `prefix`).
fn snapshot_case(case: &str, dir: &Path, prefix: &str) {
    let mut n = 0;
    for (path, content) in tree(&dir.join("gen").join("migrations")) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with(prefix) {
            continue;
        }
        let target = path
            .parent()
            .unwrap()
            .display()
            .to_string()
            .replace('/', "_");
        let snap = format!(
            "{target}__{}",
            name.trim_end_matches(".sql").replace('.', "_")
        );
        insta::with_settings!({
            snapshot_path => format!("snapshots/{case}"),
            prepend_module_to_snapshot => false,
        }, {
            insta::assert_snapshot!(snap, String::from_utf8(content).unwrap());
        });
        n += 1;
    }
    assert_eq!(n, 8, "4 targets, up and down");
}

#[test]
fn tasks_example() {
    let dir = tempfile::tempdir().unwrap();
    generate(
        dir.path(),
        include_str!("../../examples/tasks/src/model.rs"),
    );
    snapshot_case("tasks_example", dir.path(), "0001");
    let schema =
        std::fs::read_to_string(dir.path().join("gen").join(sync_cli::SNAPSHOT_FILE)).unwrap();
    insta::with_settings!({ snapshot_path => "snapshots/tasks_example", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!("sync_schema_json", schema);
    });
}

#[test]
fn evolution() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("init_keywords", V1.to_string(), "0001"),
        ("add_entity", v2(), "0002"),
        ("add_fields_with_defaults", v3(), "0003"),
        ("union_widen_and_metadata", v4(), "0004"),
        ("rename_and_index", v5(), "0005"),
        ("rename_entity", v6(), "0006"),
    ];
    for (case, src, prefix) in cases {
        generate(dir.path(), &src);
        snapshot_case(case, dir.path(), prefix);
    }
}
