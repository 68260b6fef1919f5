//! `sync-cli generate`: source -> model -> the next migration, written all-or-nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sync_model::{Model, fingerprint};

use crate::error::Error;
use crate::plan::{Step, diff};
use crate::render::{Migration, Target, check_defaults, render};
use crate::source::load;

/// The name of the model snapshot in the output folder.
pub const SNAPSHOT_FILE: &str = "sync-schema.json";

/// `sync-schema.json`: the model the committed migrations correspond to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// The snapshot format (currently 1).
    pub format: u32,
    /// The fingerprint of `model`.
    pub fingerprint: String,
    /// Every migration generated so far, in order.
    pub migrations: Vec<MigrationRecord>,
    /// The model after the last migration.
    pub model: Model,
}

/// One generated migration, as recorded in the snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationRecord {
    /// Its number (1, 2, ...).
    pub version: u32,
    /// Its name.
    pub name: String,
    /// The model fingerprint after it.
    pub fingerprint: String,
}

impl MigrationRecord {
    /// The file name of the up migration, `NNNN_name.sql`.
    pub fn file_name(&self) -> String {
        format!("{:04}_{}.sql", self.version, self.name)
    }

    /// The file name of the down migration, `NNNN_name.down.sql`.
    pub fn down_file_name(&self) -> String {
        format!("{:04}_{}.down.sql", self.version, self.name)
    }
}

/// What `generate` is asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Rust source files or folders.
    pub inputs: Vec<PathBuf>,
    /// The output folder.
    pub out_dir: PathBuf,
    /// Generate drops of entities and fields.
    pub allow_destructive: bool,
    /// Write nothing; fail if the committed output is stale.
    pub check: bool,
}

/// What `generate` did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The new migration, if the model changed.
    pub migration: Option<MigrationRecord>,
    /// What the new migration changes.
    pub changes: Vec<String>,
    /// The files written (empty for `check`).
    pub written: Vec<PathBuf>,
    /// The source files read.
    pub inputs_read: Vec<PathBuf>,
}

/// Reads the sources, compares them with the snapshot in `out_dir` and writes the next
/// migration for every target, or nothing if the model did not change.
///
/// Output is deterministic: the same model and snapshot give the same bytes. Nothing is
/// half-written: every file is rendered in memory first, new files are staged in a
/// temporary folder inside `out_dir` and moved into place, and `sync-schema.json` is
/// replaced last, so an interrupted run leaves the old snapshot and regenerates the same
/// files next time.
pub fn generate(opts: &Options) -> Result<Report, Error> {
    let loaded = load(&opts.inputs)?;
    let model = loaded.model;
    let problems = check_defaults(&model);
    if !problems.is_empty() {
        return Err(Error::Unsupported(problems));
    }
    let snapshot_path = opts.out_dir.join(SNAPSHOT_FILE);
    let previous = read_snapshot(&snapshot_path)?;
    let new_fp = fingerprint(&model).0;

    let (steps, initial, version) = match &previous {
        None => (
            model
                .entities
                .iter()
                .cloned()
                .map(Step::CreateEntity)
                .collect::<Vec<_>>(),
            true,
            1,
        ),
        Some(prev) => {
            let mut steps = diff(&prev.model, &model, opts.allow_destructive)?;
            if steps.is_empty() && prev.fingerprint != new_fp {
                steps.push(Step::Metadata(
                    "the model changed without a schema effect (for example field order)"
                        .to_string(),
                ));
            }
            let next = prev.migrations.last().map_or(1, |m| m.version + 1);
            (steps, false, next)
        }
    };

    let mut files: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut migrations = previous
        .as_ref()
        .map(|p| p.migrations.clone())
        .unwrap_or_default();
    let mut record = None;
    if initial || !steps.is_empty() {
        let name = if initial {
            "init".to_string()
        } else {
            migration_name(&steps)
        };
        let rec = MigrationRecord {
            version,
            name,
            fingerprint: new_fp.clone(),
        };
        let m = Migration {
            version,
            name: &rec.name,
            fingerprint: &new_fp,
            initial,
            steps: &steps,
        };
        for target in Target::ALL {
            let (up, down) = render(&m, target)?;
            let dir = PathBuf::from("migrations").join(target.folder());
            files.insert(dir.join(rec.file_name()), up);
            if let Some(down) = down {
                files.insert(dir.join(rec.down_file_name()), down);
            }
        }
        migrations.push(rec.clone());
        record = Some(rec);
    }
    let snapshot = Snapshot {
        format: 1,
        fingerprint: new_fp,
        migrations,
        model,
    };
    let mut snapshot_text = serde_json::to_string_pretty(&snapshot).expect("snapshot serialises");
    snapshot_text.push('\n');

    let report = Report {
        migration: record,
        changes: steps.iter().map(Step::describe).collect(),
        written: Vec::new(),
        inputs_read: loaded.files,
    };
    if opts.check {
        check(&opts.out_dir, &snapshot, &snapshot_text, &files)?;
        return Ok(report);
    }
    let current = std::fs::read_to_string(&snapshot_path).ok();
    if files.is_empty() && current.as_deref() == Some(snapshot_text.as_str()) {
        return Ok(report);
    }
    let written = write_all(&opts.out_dir, files, &snapshot_text)?;
    Ok(Report { written, ..report })
}

fn migration_name(steps: &[Step]) -> String {
    // Name the migration after its schema changes; metadata-only steps name it only
    // when there is nothing else.
    let schema: Vec<&Step> = steps
        .iter()
        .filter(|s| !matches!(s, Step::Metadata(_)))
        .collect();
    let named: Vec<&Step> = if schema.is_empty() {
        steps.iter().collect()
    } else {
        schema
    };
    let mut name = named[0].slug();
    if named.len() == 2 {
        name = format!("{name}_and_{}", named[1].slug());
    } else if named.len() > 2 {
        name = format!("{name}_and_{}_more", named.len() - 1);
    }
    name.truncate(60);
    name.trim_end_matches('_').to_string()
}

/// Reads `sync-schema.json`, if it exists.
pub fn read_snapshot(path: &Path) -> Result<Option<Snapshot>, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let snapshot: Snapshot = serde_json::from_str(&text).map_err(|e| Error::Snapshot {
        path: path.to_path_buf(),
        message: format!("not a valid syncgen snapshot: {e}"),
    })?;
    if snapshot.format != 1 {
        return Err(Error::Snapshot {
            path: path.to_path_buf(),
            message: format!(
                "snapshot format {} is not supported by this syncgen (expected 1)",
                snapshot.format
            ),
        });
    }
    Ok(Some(snapshot))
}

fn check(
    out_dir: &Path,
    snapshot: &Snapshot,
    snapshot_text: &str,
    new_files: &BTreeMap<PathBuf, String>,
) -> Result<(), Error> {
    let mut problems = Vec::new();
    for (rel, content) in new_files {
        let path = out_dir.join(rel);
        match std::fs::read_to_string(&path) {
            Ok(existing) if existing == *content => {}
            Ok(existing) => problems.push(format!(
                "{} differs from what the model generates:\n{}",
                path.display(),
                unified(&existing, content)
            )),
            Err(_) => problems.push(format!(
                "{} is missing: the model changed since the last `sync-cli generate`",
                path.display()
            )),
        }
    }
    let snapshot_path = out_dir.join(SNAPSHOT_FILE);
    let existing = std::fs::read_to_string(&snapshot_path).unwrap_or_default();
    if existing != snapshot_text {
        problems.push(format!(
            "{} is out of date:\n{}",
            snapshot_path.display(),
            unified(&existing, snapshot_text)
        ));
    }
    for rec in &snapshot.migrations {
        for target in Target::ALL {
            let path = out_dir
                .join("migrations")
                .join(target.folder())
                .join(rec.file_name());
            if !new_files.contains_key(
                &PathBuf::from("migrations")
                    .join(target.folder())
                    .join(rec.file_name()),
            ) && !path.is_file()
            {
                problems.push(format!("{} is missing", path.display()));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Stale(format!(
            "error: the generated files in {} are stale; run `sync-cli generate` and commit the result\n{}",
            out_dir.display(),
            problems.join("\n")
        )))
    }
}

fn unified(old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(2)
        .header("committed", "generated")
        .to_string()
}

fn write_all(
    out_dir: &Path,
    files: BTreeMap<PathBuf, String>,
    snapshot: &str,
) -> Result<Vec<PathBuf>, Error> {
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let staging = out_dir.join(format!(".sync-cli-staging-{}", std::process::id()));
    let result = (|| {
        let _ = std::fs::remove_dir_all(&staging);
        let mut staged = Vec::new();
        for (rel, content) in &files {
            let tmp = staging.join(rel);
            std::fs::create_dir_all(tmp.parent().expect("has parent"))
                .map_err(|e| Error::io(&tmp, e))?;
            std::fs::write(&tmp, content).map_err(|e| Error::io(&tmp, e))?;
            staged.push((tmp, out_dir.join(rel)));
        }
        let snap_tmp = staging.join(SNAPSHOT_FILE);
        std::fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
        std::fs::write(&snap_tmp, snapshot).map_err(|e| Error::io(&snap_tmp, e))?;
        let mut written = Vec::new();
        for (tmp, dest) in staged {
            std::fs::create_dir_all(dest.parent().expect("has parent"))
                .map_err(|e| Error::io(&dest, e))?;
            std::fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
            written.push(dest);
        }
        let dest = out_dir.join(SNAPSHOT_FILE);
        std::fs::rename(&snap_tmp, &dest).map_err(|e| Error::io(&dest, e))?;
        written.push(dest);
        Ok(written)
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}
