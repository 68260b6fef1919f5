//! The syncgen entity model (IR) and the one parser of `#[sync(...)]` attributes.
//!
//! Every other syncgen crate reads entities through this crate: the derive macro
//! (`sync-derive`) parses the struct it is applied to with [`parse_derive_input`], the
//! CLI parses source files with [`entities_in_file`], and the runtime and the server
//! read the model the derive embeds. Because there is one parser, the model the
//! compiled code carries is the model the migrations and the OpenAPI document were
//! generated from.
//!
//! ```
//! let model = sync_model::parse_source(r#"
//!     #[derive(Syncable)]
//!     #[sync(entity = "task")]
//!     pub struct Task {
//!         #[sync(id)]
//!         pub id: Uuid,
//!         pub title: String,
//!         #[sync(merge = "sum")]
//!         pub likes: i64,
//!     }
//! "#).unwrap();
//! let task = model.entity("task").unwrap();
//! assert_eq!(task.table, "tasks");
//! assert_eq!(task.field("likes").unwrap().merge, sync_model::MergeStrategy::Sum);
//! ```
//!
//! Errors carry spans: every bad attribute in a struct is reported at once, at the
//! token to change, with a message that says what to write instead.

mod check;
mod ctxt;
mod fingerprint;
mod model;
mod parse;
mod source;
pub mod sql;
mod types;
mod validate;

pub use check::{MAX_IDENT_LEN, MAX_TABLE_LEN, RESERVED_PREFIX, is_identifier};
pub use fingerprint::{Fingerprint, fingerprint, fingerprint_entity};
pub use model::{
    Collection, Entity, Field, FieldType, MergeStrategy, Model, OutboxMode, ScalarType, ScopeRule,
    TypeKind,
};
pub use parse::{CONTAINER_KEYS, FIELD_KEYS, ParsedEntity, parse_derive_input, parse_item_struct};
pub use source::{derives_syncable, entities_in_file, is_cfg_test, parse_source};
pub use validate::{ModelIssue, validate_model};
