//! The `sync-cli` binary: output, exit codes, error messages, check mode, and that bad
//! input never touches the output folder.

mod common;

use std::process::Command;

use common::{V1, tree, v2, write_model};

fn sync_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sync-cli"))
        .args(args)
        .output()
        .expect("run sync-cli");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn generate(
    model: &std::path::Path,
    out: &std::path::Path,
    extra: &[&str],
) -> (i32, String, String) {
    let mut args = vec![
        "generate",
        "--input",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    sync_cli(&args)
}

#[test]
fn generate_writes_every_target_then_nothing_when_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), V1);
    let out = dir.path().join("gen");
    let (code, stdout, stderr) = generate(&model, &out, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("wrote migration 0001 `init`"), "{stdout}");
    let files: Vec<String> = tree(&out)
        .into_iter()
        .map(|(p, _)| p.display().to_string())
        .collect();
    assert_eq!(
        files,
        [
            "client_migrations.rs",
            "conformance-vectors.json",
            "migrations/client/sqlite/0001_init.down.sql",
            "migrations/client/sqlite/0001_init.sql",
            "migrations/server/mysql/0001_init.down.sql",
            "migrations/server/mysql/0001_init.sql",
            "migrations/server/postgres/0001_init.down.sql",
            "migrations/server/postgres/0001_init.sql",
            "migrations/server/sqlite/0001_init.down.sql",
            "migrations/server/sqlite/0001_init.sql",
            "openapi-3.0.json",
            "openapi.json",
            "openapi.yaml",
            "server_mysql_migrations.rs",
            "server_postgres_migrations.rs",
            "server_sqlite_migrations.rs",
            "sync-schema.json",
        ]
    );
    let before = tree(&out);
    let (code, stdout, _) = generate(&model, &out, &[]);
    assert_eq!(code, 0);
    assert!(stdout.contains("nothing to write"), "{stdout}");
    assert_eq!(tree(&out), before, "no change, no new file");

    // Deterministic: a fresh folder gets the same bytes.
    let out2 = dir.path().join("gen2");
    generate(&model, &out2, &[]);
    assert_eq!(tree(&out2), before);
}

#[test]
fn check_mode_detects_stale_output_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), V1);
    let out = dir.path().join("gen");
    generate(&model, &out, &[]);
    let (code, stdout, stderr) = generate(&model, &out, &["--check"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("is up to date"));

    write_model(dir.path(), &v2());
    let before = tree(&out);
    let (code, _, stderr) = generate(&model, &out, &["--check"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("stale"), "{stderr}");
    assert!(stderr.contains("0002_add_group.sql is missing"), "{stderr}");
    assert!(
        stderr.contains("sync-schema.json is out of date (+"),
        "a short summary: {stderr}"
    );
    assert!(!stderr.contains("@@"), "no diff without --diff: {stderr}");
    let (code, _, stderr) = generate(&model, &out, &["--check", "--diff"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("+      \"name\": \"add_group\","),
        "a readable diff: {stderr}"
    );
    assert_eq!(tree(&out), before);
    let (code, _, stderr) = generate(&model, &out, &["--diff"]);
    assert_eq!(code, 2, "--diff without --check is a usage error: {stderr}");
}

#[test]
fn syntax_error_points_at_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(
        dir.path(),
        "#[derive(Syncable)]\npub struct Task {\n    #[sync(id)]\n    pub id: Uuid,\n    pub title String,\n}\n",
    );
    let out = dir.path().join("gen");
    let (code, _, stderr) = generate(&model, &out, &[]);
    assert_eq!(code, 2, "{stderr}");
    let expected = format!(
        "{}:5:15: error: cannot parse Rust source: expected `:`",
        model.display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
    assert!(!out.exists(), "nothing written");
}

#[test]
fn misused_attributes_are_all_reported_with_their_places() {
    let dir = tempfile::tempdir().unwrap();
    let src = "#[derive(Syncable)]\npub struct Task {\n    #[sync(id)]\n    pub id: Uuid,\n    #[sync(merge = \"sum\")]\n    pub title: String,\n    #[sync(merge = \"unoin\")]\n    pub tags: Vec<String>,\n}\n";
    let model = write_model(dir.path(), src);
    let out = dir.path().join("gen");
    let (code, _, stderr) = generate(&model, &out, &[]);
    assert_eq!(code, 2, "{stderr}");
    let m = model.display();
    assert!(
        stderr.contains(&format!(
            "{m}:6:16: error: `sum` adds concurrent increments"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{m}:7:20: error: unknown merge strategy `unoin`; did you mean \"union\"?"
        )),
        "{stderr}"
    );
    assert!(!out.exists());
}

#[test]
fn unknown_reference_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let src = "#[derive(Syncable)]\npub struct Task {\n    #[sync(id)]\n    pub id: Uuid,\n    #[sync(references = \"projet\")]\n    pub project: Uuid,\n}\n";
    let model = write_model(dir.path(), src);
    let (code, _, stderr) = generate(&model, &dir.path().join("gen"), &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains(
            ":6:9: error: `project` references unknown entity `projet`; known entities: task"
        ),
        "{stderr}"
    );
}

#[test]
fn a_scope_that_cannot_reach_a_root_is_an_error_at_its_field() {
    let dir = tempfile::tempdir().unwrap();
    let src = "#[derive(Syncable)]\npub struct Project {\n    #[sync(id)]\n    pub id: Uuid,\n}\n\n#[derive(Syncable)]\n#[sync(scope = \"project\")]\npub struct Task {\n    #[sync(id)]\n    pub id: Uuid,\n    #[sync(references = \"project\")]\n    pub project: Uuid,\n}\n";
    let model = write_model(dir.path(), src);
    let (code, _, stderr) = generate(&model, &dir.path().join("gen"), &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(
            ":13:9: error: `Task` shares the scope of the `project` it references, but `Project` declares no scope; give `Project` #[sync(scope = \"self\")]"
        ),
        "{stderr}"
    );
}

#[test]
fn destructive_change_is_refused_without_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), &v2());
    let out = dir.path().join("gen");
    assert_eq!(generate(&model, &out, &[]).0, 0);
    write_model(dir.path(), V1);
    let before = tree(&out);
    let (code, _, stderr) = generate(&model, &out, &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("destructive change: entity `group` (Group) was removed"),
        "{stderr}"
    );
    assert!(stderr.contains("--allow-destructive"), "{stderr}");
    assert_eq!(tree(&out), before, "output folder untouched");

    let (code, stdout, stderr) = generate(&model, &out, &["--allow-destructive"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("0002 `drop_group`"), "{stdout}");
}

#[test]
fn missing_input_path() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("gen");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "x").unwrap();
    let before = tree(&out);
    let missing = dir.path().join("nope.rs");
    let (code, _, stderr) = generate(&missing, &out, &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("nope.rs` does not exist"), "{stderr}");
    assert_eq!(tree(&out), before);
}

#[test]
fn new_required_field_without_default_explains_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), V1);
    let out = dir.path().join("gen");
    generate(&model, &out, &[]);
    write_model(
        dir.path(),
        &V1.replace(
            "    pub name: String,",
            "    pub name: String,\n    pub owner: String,",
        ),
    );
    let before = tree(&out);
    let (code, _, stderr) = generate(&model, &out, &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("field `owner` of `project` (Project.owner) is new and not optional"),
        "{stderr}"
    );
    assert!(stderr.contains("#[sync(default = ...)]"), "{stderr}");
    // At the field in the source: file:line:col.
    let line = V1
        .lines()
        .position(|l| l.contains("pub name: String"))
        .unwrap()
        + 2;
    assert!(
        stderr.contains(&format!(
            "{}:{line}:9: error: field `owner`",
            model.display()
        )),
        "{stderr}"
    );
    assert_eq!(tree(&out), before);
}

#[test]
fn folders_and_mod_declarations_are_walked() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("model")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod model;\n#[cfg(test)]\nmod tests;\n").unwrap();
    std::fs::write(src.join("model.rs"), "mod task;\npub use task::Task;\n").unwrap();
    std::fs::write(
        src.join("model").join("task.rs"),
        "#[derive(sync_runtime::Syncable)]\npub struct Task {\n    #[sync(id)]\n    pub id: Uuid,\n}\n",
    )
    .unwrap();
    let (code, stdout, stderr) =
        sync_cli(&["inspect", "--input", src.join("lib.rs").to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("Task (entity `task`, table `tasks`"),
        "{stdout}"
    );
    // A folder input reads every file once.
    let (code, stdout, _) = sync_cli(&["inspect", "--input", src.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(stdout.matches("Task (entity").count(), 1);
}

#[test]
fn cfg_on_a_syncable_struct_is_rejected_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(
        dir.path(),
        "#[cfg(feature = \"x\")]\n#[derive(Syncable)]\npub struct Task {\n    #[sync(id)]\n    pub id: Uuid,\n}\n",
    );
    let (code, _, stderr) = generate(&model, &dir.path().join("gen"), &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains(":1:1: error: syncgen generates one schema for every build"),
        "{stderr}"
    );
}

#[test]
fn the_example_apps_committed_migrations_are_up_to_date() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let model = root.join("examples/tasks/src/model.rs");
    let out = root.join("examples/tasks/generated");
    let (code, stdout, stderr) = generate(&model, &out, &["--check"]);
    assert_eq!(
        code, 0,
        "regenerate with `cargo run -p sync-cli -- generate --input examples/tasks/src/model.rs --out examples/tasks/generated`:\n{stdout}{stderr}"
    );
}

#[test]
fn api_metadata_flags_are_stored_and_kept_by_later_runs() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), V1);
    let out = dir.path().join("gen");
    let (code, _, stderr) = generate(
        &model,
        &out,
        &[
            "--title",
            "Inventory sync API",
            "--server",
            "https://sync.example.com/v1",
            "--server",
            "/sync",
            "--license",
            "Apache-2.0",
            "--contact-email",
            "sync@example.com",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let doc = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.join(name)).unwrap()).unwrap()
    };
    let v31 = doc("openapi.json");
    assert_eq!(v31["info"]["title"], "Inventory sync API");
    assert_eq!(
        v31["servers"],
        serde_json::json!([{ "url": "https://sync.example.com/v1" }, { "url": "/sync" }])
    );
    assert_eq!(
        v31["info"]["license"],
        serde_json::json!({ "name": "Apache-2.0", "identifier": "Apache-2.0" })
    );
    assert_eq!(
        v31["info"]["contact"],
        serde_json::json!({ "email": "sync@example.com" })
    );
    // 3.0 has no `identifier`: the SPDX page instead.
    assert_eq!(
        doc("openapi-3.0.json")["info"]["license"],
        serde_json::json!({ "name": "Apache-2.0", "url": "https://spdx.org/licenses/Apache-2.0.html" })
    );

    // A run without the flags keeps them: nothing to write.
    let before = tree(&out);
    let (code, stdout, _) = generate(&model, &out, &[]);
    assert_eq!(code, 0);
    assert!(stdout.contains("nothing to write"), "{stdout}");
    assert_eq!(tree(&out), before);
    let (code, _, stderr) = generate(&model, &out, &["--check"]);
    assert_eq!(code, 0, "{stderr}");

    // One flag replaces its part only; no new migration.
    let (code, stdout, stderr) = generate(&model, &out, &["--title", "Renamed"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("refreshed"), "{stdout}");
    let v31 = doc("openapi.json");
    assert_eq!(v31["info"]["title"], "Renamed");
    assert_eq!(v31["servers"][1]["url"], "/sync");
    assert!(!out.join("migrations/client/sqlite/0002_").exists());
    assert_eq!(
        std::fs::read_dir(out.join("migrations/client/sqlite"))
            .unwrap()
            .count(),
        2,
        "still only 0001 up and down"
    );
}

#[test]
fn bad_api_metadata_is_refused_with_what_to_fix_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), V1);
    let out = dir.path().join("gen");
    let (code, _, stderr) = generate(
        &model,
        &out,
        &["--server", "sync.example.com", "--contact-email", "nobody"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("server `sync.example.com`"), "{stderr}");
    assert!(stderr.contains("contact email `nobody`"), "{stderr}");
    assert!(stderr.contains("flags of `sync-cli generate`"), "{stderr}");
    assert!(!out.exists(), "nothing written");

    // A hand-edited snapshot with a bad value names the file.
    generate(&model, &out, &[]);
    let path = out.join("sync-schema.json");
    let mut snapshot: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    snapshot["api"] = serde_json::json!({ "servers": [{ "url": "ftp://x" }] });
    std::fs::write(&path, serde_json::to_string_pretty(&snapshot).unwrap()).unwrap();
    let (code, _, stderr) = generate(&model, &out, &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("sync-schema.json (its `api` member)"),
        "{stderr}"
    );
    assert!(stderr.contains("`ftp://x`"), "{stderr}");
}
