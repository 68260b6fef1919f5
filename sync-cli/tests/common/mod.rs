//! Helpers shared by the sync-cli integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Successive versions of a model, each a complete source file.
pub const V1: &str = r#"
use sync_runtime::prelude::*;

#[derive(Syncable)]
#[sync(entity = "project")]
pub struct Project {
    #[sync(id)]
    pub id: Uuid,
    pub name: String,
    #[sync(immutable)]
    pub created_at: DateTime<Utc>,
}

/// Named like an SQL keyword on purpose, with keyword-named fields.
#[derive(Syncable)]
pub struct Order {
    #[sync(id)]
    pub id: Uuid,
    #[sync(references = "project")]
    pub project_id: Uuid,
    pub title: String,
    pub r#type: String,
    pub select: bool,
    #[sync(rename = "key")]
    pub order_key: Option<i32>,
    #[sync(merge = "sum")]
    pub likes: i64,
    #[sync(merge = "manual")]
    pub price_cents: i64,
    pub ratio: f32,
    pub due: Option<DateTime<Utc>>,
    pub blob: Vec<u8>,
    #[sync(json)]
    pub meta: std::collections::BTreeMap<String, String>,
}
"#;

/// V2: a new entity.
pub fn v2() -> String {
    format!(
        "{V1}\n{}",
        r#"
#[derive(Syncable)]
#[sync(entity = "group", outbox = "history")]
pub struct Group {
    #[sync(id)]
    pub id: Uuid,
    pub label: String,
}
"#
    )
}

/// V3: new fields with defaults (and a nullable one, which needs none).
pub fn v3() -> String {
    v2().replace(
        "    pub label: String,\n}",
        "    pub label: String,\n    #[sync(default = 3)]\n    pub priority: i32,\n    #[sync(default = \"it's \\\\ new\")]\n    pub note: String,\n    pub color: Option<String>,\n    pub owner_id: Option<Uuid>,\n    #[sync(default = \"2024-01-01T00:00:00Z\")]\n    pub since: DateTime<Utc>,\n    #[sync(default = true)]\n    pub active: bool,\n}",
    )
}

/// V4: a union field, a widened type and a merge change (metadata only).
pub fn v4() -> String {
    v3().replace(
        "    pub ratio: f32,",
        "    pub ratio: f64,\n    #[sync(merge = \"union\")]\n    pub labels: std::collections::BTreeSet<String>,",
    )
    .replace("    pub title: String,", "    #[sync(merge = \"manual\")]\n    pub title: String,")
}

/// V5: an explicit rename, a new referencing field, and a field that gains `references`.
pub fn v5() -> String {
    v4().replace(
        "    pub owner_id: Option<Uuid>,",
        "    #[sync(references = \"project\")]\n    pub owner_id: Option<Uuid>,",
    )
    .replace(
        "    #[sync(merge = \"manual\")]\n    pub title: String,",
        "    #[sync(merge = \"manual\", renamed_from = \"title\")]\n    pub heading: String,",
    )
    .replace(
        "    pub color: Option<String>,",
        "    pub color: Option<String>,\n    #[sync(references = \"order\")]\n    pub order_id: Option<Uuid>,",
    )
}

/// V6: an entity renamed (`group` to `team`, so its table `groups` becomes `teams`),
/// with its referencing fields' indexes.
pub fn v6() -> String {
    let old = "#[sync(entity = \"group\", outbox = \"history\")]\npub struct Group {";
    assert!(v5().contains(old));
    v5().replace(
        old,
        "#[sync(entity = \"team\", outbox = \"history\", renamed_from = \"group\")]\npub struct Team {",
    )
}

/// Writes `src` to `dir/model.rs` and returns the path.
pub fn write_model(dir: &Path, src: &str) -> PathBuf {
    let path = dir.join("model.rs");
    std::fs::write(&path, src).unwrap();
    path
}

/// Every file under `dir` with its content, sorted, for "untouched" checks.
pub fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out.sort();
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(root, &path, out);
        } else {
            out.push((
                path.strip_prefix(root).unwrap().to_path_buf(),
                std::fs::read(&path).unwrap(),
            ));
        }
    }
}
