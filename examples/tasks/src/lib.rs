//! syncgen's example app: projects, tasks and comments.
//!
//! The model lives in [`model`]; `build.rs` regenerates the SQL migrations in
//! `generated/` from it with `sync_cli::Builder` and fails the build if they would
//! change destructively.

/// The synced entities.
pub mod model;

/// The migrations generated from [`model`], relative to this crate.
pub const GENERATED_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/generated");
