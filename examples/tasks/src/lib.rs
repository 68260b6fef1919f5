//! syncgen's example app: projects, tasks and comments.
//!
//! The model lives in [`model`]; `build.rs` regenerates the SQL migrations in
//! `generated/` from it with `sync_cli::Builder` and fails the build if they would
//! change destructively.

/// The synced entities.
pub mod model;

/// The repository's README, whose Rust code blocks compile as this crate's doc tests
/// (the client program uses this crate's model and generated migrations).
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

/// The migrations generated from [`model`], relative to this crate.
pub const GENERATED_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/generated");

use sync_runtime::migrations::MigrationsError;
use sync_runtime::store::{LocalStore, Migrations, StoreBuilder, StoreError};

/// The client migrations generated from [`model`], embedded.
///
/// # Errors
/// [`MigrationsError`] if the embedded list is malformed (see [`Migrations::embedded`]);
/// `build.rs` generates it well-formed, so this does not happen unless the generated
/// files were edited by hand.
pub fn client_migrations() -> Result<Migrations, MigrationsError> {
    Migrations::embedded(include!("../generated/client_migrations.rs"))
}

/// The server's SQLite migrations, embedded.
///
/// # Errors
/// As [`client_migrations`].
pub fn server_sqlite_migrations() -> Result<Migrations, MigrationsError> {
    Migrations::embedded(include!("../generated/server_sqlite_migrations.rs"))
}

/// The server's PostgreSQL migrations, embedded.
///
/// # Errors
/// As [`client_migrations`].
pub fn server_postgres_migrations() -> Result<Migrations, MigrationsError> {
    Migrations::embedded(include!("../generated/server_postgres_migrations.rs"))
}

/// A builder for one device's local store with every entity of the model and the
/// embedded migrations, for callers that set more (durability, clocks) before opening.
///
/// # Errors
/// [`StoreError::Migrations`] if the embedded client migrations are malformed (see
/// [`client_migrations`]).
pub fn store_builder(path: impl AsRef<std::path::Path>) -> Result<StoreBuilder, StoreError> {
    Ok(LocalStore::builder(path)
        .entity::<model::Project>()
        .entity::<model::Task>()
        .entity::<model::Comment>()
        .migrations(client_migrations()?))
}

/// Opens (creating if needed) one device's local store with every entity of the model.
///
/// # Errors
/// Those of [`store_builder`] and of [`StoreBuilder::open`].
pub fn open_store(path: impl AsRef<std::path::Path>) -> Result<LocalStore, StoreError> {
    store_builder(path)?.open()
}
