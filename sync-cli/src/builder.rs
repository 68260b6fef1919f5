//! The build-script API, in the style of `prost-build`.

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::generate::{Options, Report, generate};

/// Generates migrations from a build script.
///
/// In `build.rs`:
///
/// ```no_run
/// sync_cli::Builder::new()
///     .input("src/model.rs")
///     .out_dir("generated")
///     .run();
/// ```
///
/// [`Builder::run`] fails the build with the generator's `file:line:col: error: ...`
/// lines (no panic, no backtrace); [`Builder::generate`] returns the error instead.
///
/// `generate` prints `cargo:rerun-if-changed=` for every source file it reads, so Cargo
/// reruns the build script only when the model changes.
#[derive(Debug, Clone, Default)]
pub struct Builder {
    opts: Options,
    rerun_if_changed: bool,
}

impl Builder {
    /// A builder with no inputs, writing to `generated/`.
    pub fn new() -> Self {
        Builder {
            opts: Options {
                out_dir: PathBuf::from("generated"),
                ..Options::default()
            },
            rerun_if_changed: true,
        }
    }

    /// Adds a Rust source file or folder to read.
    pub fn input(mut self, path: impl AsRef<Path>) -> Self {
        self.opts.inputs.push(path.as_ref().to_path_buf());
        self
    }

    /// Sets the output folder (migrations and `sync-schema.json` go there).
    pub fn out_dir(mut self, path: impl AsRef<Path>) -> Self {
        self.opts.out_dir = path.as_ref().to_path_buf();
        self
    }

    /// Allows migrations that drop entities or fields.
    pub fn allow_destructive(mut self, allow: bool) -> Self {
        self.opts.allow_destructive = allow;
        self
    }

    /// Sets the API's title, servers, licence and contact for the OpenAPI document; each
    /// part set replaces the one stored in `sync-schema.json`, unset parts keep it (see
    /// [`crate::api_info`]).
    ///
    /// ```no_run
    /// use sync_cli::api_info::{ApiInfo, ApiLicense, ApiServer};
    ///
    /// sync_cli::Builder::new()
    ///     .input("src/model.rs")
    ///     .api(ApiInfo {
    ///         title: Some("Tasks sync API".into()),
    ///         servers: vec![ApiServer { url: "https://sync.example.com".into(), description: None }],
    ///         license: Some(ApiLicense { name: "MIT".into(), identifier: Some("MIT".into()), url: None }),
    ///         contact: None,
    ///     })
    ///     .generate()
    ///     .unwrap_or_else(|e| panic!("{e}"));
    /// ```
    pub fn api(mut self, api: crate::ApiInfo) -> Self {
        self.opts.api = api;
        self
    }

    /// With [`Builder::check`]: show each stale file's diff in the error, not only which
    /// files are stale.
    pub fn diff(mut self, diff: bool) -> Self {
        self.opts.diff = diff;
        self
    }

    /// Writes nothing and fails if the output is stale.
    pub fn check(mut self, check: bool) -> Self {
        self.opts.check = check;
        self
    }

    /// Whether to print `cargo:rerun-if-changed=` lines (default: yes).
    pub fn emit_rerun_if_changed(mut self, emit: bool) -> Self {
        self.rerun_if_changed = emit;
        self
    }

    /// Runs the generator in a build script: on an error, prints each of its lines as a
    /// Cargo error (`cargo::error=`, so `cargo build` shows `error: file:line:col: error:
    /// ...` and fails) and ends the build script with exit status 1. Nothing is written
    /// on an error (see [`generate()`](crate::generate())).
    pub fn run(self) -> Report {
        match self.generate() {
            Ok(report) => report,
            Err(e) => {
                for line in e.to_string().lines() {
                    println!("cargo::error={line}");
                }
                std::process::exit(1);
            }
        }
    }

    /// Runs the generator.
    ///
    /// # Errors
    /// Those of [`generate()`](crate::generate()): [`Error::MissingInput`], [`Error::Io`],
    /// [`Error::Input`] and [`Error::NoEntities`] while reading the source;
    /// [`Error::ApiInfo`] for API metadata that is not valid;
    /// [`Error::Unsupported`], [`Error::Destructive`] and [`Error::Snapshot`] while
    /// planning the migration; [`Error::Stale`] with [`Builder::check`]; [`Error::Io`]
    /// while writing.
    pub fn generate(self) -> Result<Report, Error> {
        let result = generate(&self.opts);
        if self.rerun_if_changed {
            for input in &self.opts.inputs {
                println!("cargo:rerun-if-changed={}", input.display());
            }
            if let Ok(report) = &result {
                for file in &report.inputs_read {
                    println!("cargo:rerun-if-changed={}", file.display());
                }
            }
        }
        result
    }
}
