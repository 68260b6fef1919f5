//! Errors, formatted the way compilers print them: `file:line:col: error: ...`.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in the input, at a place in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong and what to do.
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic at a `proc_macro2` span of a file parsed from source text.
    pub fn at(file: &Path, span: proc_macro2::Span, message: impl Into<String>) -> Self {
        let start = span.start();
        Diagnostic {
            file: file.to_path_buf(),
            line: start.line.max(1),
            column: start.column + 1,
            message: message.into(),
        }
    }

    /// Every error combined in a `syn::Error`, each at its own place.
    pub fn from_syn(file: &Path, err: syn::Error) -> Vec<Self> {
        err.into_iter()
            .map(|e| Diagnostic::at(file, e.span(), e.to_string()))
            .collect()
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Everything that can go wrong in `sync-cli`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The source has errors; nothing was written.
    #[error("{}", join(.0))]
    Input(Vec<Diagnostic>),
    /// An input path does not exist.
    #[error("error: input `{}` does not exist; pass a Rust source file or a folder of them with --input", .0.display())]
    MissingInput(PathBuf),
    /// The input holds no `#[derive(Syncable)]` struct.
    #[error("error: no struct deriving `Syncable` found in {}; annotate a struct with #[derive(Syncable)] or pass the file that has one", .0)]
    NoEntities(String),
    /// The model change would lose data and `--allow-destructive` was not given.
    #[error("{}\nnothing was written; pass --allow-destructive (Builder::allow_destructive) to generate these changes anyway, or undo them in the source", .0.iter().map(|c| format!("error: destructive change: {c}")).collect::<Vec<_>>().join("\n"))]
    Destructive(Vec<String>),
    /// The model change cannot be expressed as a migration.
    #[error("{}", .0.iter().map(|c| format!("error: {c}")).collect::<Vec<_>>().join("\n"))]
    Unsupported(Vec<String>),
    /// `sync-schema.json` could not be read.
    #[error("{}: error: {message}; regenerate it from the migrations' model or restore it from version control", path.display())]
    Snapshot {
        /// The snapshot file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The API metadata (title, servers, licence, contact) is not valid; nothing was
    /// written.
    #[error("{}\nnothing was written; fix them in {origin}", problems.iter().map(|p| format!("error: API metadata: {p}")).collect::<Vec<_>>().join("\n"))]
    ApiInfo {
        /// Where the values came from: the flags, the build script or `sync-schema.json`.
        origin: String,
        /// Each wrong part.
        problems: Vec<String>,
    },
    /// `--check`: the committed output is not what the source generates.
    #[error("{0}")]
    Stale(String),
    /// Reading or writing a file failed.
    #[error("{}: error: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A template failed to render (a bug in syncgen).
    #[error("error: rendering SQL failed (this is a bug in syncgen, please report it): {0}")]
    Render(#[from] askama::Error),
}

impl Error {
    /// The process exit code for this error: 2 for bad input, 1 for a stale check or an
    /// I/O failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Input(_)
            | Error::MissingInput(_)
            | Error::NoEntities(_)
            | Error::Destructive(_)
            | Error::Unsupported(_)
            | Error::Snapshot { .. }
            | Error::ApiInfo { .. } => 2,
            Error::Stale(_) | Error::Io { .. } | Error::Render(_) => 1,
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

fn join(d: &[Diagnostic]) -> String {
    d.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}
