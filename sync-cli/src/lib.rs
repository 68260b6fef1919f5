//! `sync-cli`: generates SQL migrations for SQLite (client and server), PostgreSQL and
//! MySQL/MariaDB from the `#[derive(Syncable)]` structs in Rust source.
//!
//! All the logic is in this library; the `sync-cli` binary and the build-script
//! [`Builder`] are thin front ends. Source is parsed with `sync-model`, the same parser
//! the derive macro uses, so the migrations always describe the compiled model.
//!
//! # Output
//!
//! `generate --out DIR` writes:
//! - `DIR/migrations/client/sqlite/NNNN_<name>.sql`: the app's local database (entity
//!   tables with sync metadata, base copies, outbox, sync state, conflicts);
//! - `DIR/migrations/server/{sqlite,postgres,mysql}/NNNN_<name>.sql`: the server (entity
//!   tables with account, version and tombstone columns, the change log, the
//!   idempotency keys);
//! - `NNNN_<name>.down.sql` beside each, undoing it (absent when a migration cannot be
//!   undone, such as dropping a required column);
//! - `DIR/sync-schema.json`: the model the migrations correspond to;
//! - `DIR/openapi.json` and `DIR/openapi.yaml`: the protocol as OpenAPI 3.1 (see [`openapi`]);
//! - `DIR/openapi-3.0.json`: the same document as OpenAPI 3.0.3, for tools that read only
//!   3.0 ([`openapi::openapi_3_0`]);
//! - `DIR/conformance-vectors.json`: merge test vectors of the protocol's rules for the
//!   model, for another server's tests ([`vectors`]);
//! - `DIR/client_migrations.rs` and `DIR/server_{sqlite,postgres,mysql}_migrations.rs`:
//!   the migrations as Rust expressions, so an app or a server can embed them with
//!   `include!` (see `sync_runtime::migrations::Migrations::embedded`).
//!
//! Each migration ends by recording itself in `sync_migrations` with the model
//! fingerprint. Files hold no transaction statements: apply each in one transaction
//! (SQLite and PostgreSQL run DDL transactionally; MySQL commits each DDL statement).
//!
//! # Schema evolution
//!
//! With a `sync-schema.json` present, `generate` writes only the next numbered migration:
//! new entities, new fields (a non-optional one needs `#[sync(default = ...)]`), new or
//! dropped indexes, widened integer and float types, renames declared with
//! `#[sync(renamed_from = "...")]`, and metadata-only changes (merge strategy, outbox
//! mode). Drops are refused unless `allow_destructive`. No change, no new file.

pub mod api_info;
mod builder;
pub mod conformance;
mod error;
mod generate;
mod inspect;
pub mod openapi;
pub mod plan;
pub mod render;
mod source;
pub mod vectors;

pub use api_info::ApiInfo;
pub use builder::Builder;
pub use error::{Diagnostic, Error};
pub use generate::{
    MigrationRecord, Options, Report, SNAPSHOT_FILE, Snapshot, generate, read_snapshot,
};
pub use inspect::inspect;
pub use source::{Loaded, load};
