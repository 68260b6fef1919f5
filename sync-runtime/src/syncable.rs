//! The traits `#[derive(Syncable)]` implements.

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::hlc::Hlc;
use crate::merge::FieldConflict;

/// A record as it travels on the wire: wire names to JSON values, synced fields only.
pub type Record = serde_json::Map<String, serde_json::Value>;

/// A syncable entity. Implemented by `#[derive(Syncable)]`; see the crate docs.
///
/// Clocks are kept **per field**: every `lww` field carries the [`Hlc`] of its last edit
/// (in [`Syncable::Clocks`]). With a single per-record stamp, an older edit of one field
/// would beat a newer edit of the same field made on another device whenever the first
/// device later touched any other field; per-field stamps make `lww` mean "the last edit
/// *of this field* wins". The cost is one 24-byte stamp per `lww` field.
pub trait Syncable: Clone + Debug + Send + Sync + 'static {
    /// The field-level patch: one optional operation per synced, mutable field.
    type Patch: Patch;
    /// One [`Hlc`] per `lww` field: when each was last edited.
    type Clocks: Clocks;

    /// The entity's wire name (`#[sync(entity = "...")]`).
    const ENTITY: &'static str;
    /// The fingerprint of this entity's model ([`sync_model::fingerprint_entity`]).
    const FINGERPRINT: &'static str;

    /// The entity's model, identical to what `sync-cli` parses from the source.
    fn model() -> &'static sync_model::Entity;

    /// The record's id.
    fn id(&self) -> Uuid;

    /// The patch that turns `old` into `new`, with `lww` operations stamped `hlc`.
    ///
    /// Fails if `new` changes the id or an `immutable` field.
    ///
    /// # Errors
    /// [`DiffError::IdChanged`] if `new` has another id than `old`;
    /// [`DiffError::ImmutableChanged`] for the first `immutable` field (in declaration
    /// order) whose value differs.
    fn diff(old: &Self, new: &Self, hlc: Hlc) -> Result<Self::Patch, DiffError>;

    /// Applies every operation of `patch` to `self`.
    fn apply(&mut self, patch: &Self::Patch);

    /// Records the clocks of the `lww` operations in `patch` (keeping the greater stamp).
    fn stamp(clocks: &mut Self::Clocks, patch: &Self::Patch);

    /// Applies a patch made against an older version of this record (what a server does
    /// when a mutation's base version is not the current one), field by field:
    /// an `lww` operation applies only if its stamp is newer than the field's clock (exact
    /// ties by value, as in a merge); `sum` and `union` operations always apply; a
    /// `manual` operation applies if the field still holds the operation's base (or
    /// already holds its new value).
    ///
    /// If any `manual` field holds a third value, nothing is applied and the wire names
    /// of those fields are returned: the mutation is a conflict.
    fn apply_concurrent(
        &mut self,
        clocks: &mut Self::Clocks,
        patch: &Self::Patch,
    ) -> Vec<&'static str>;

    /// Three-way merge in place: `self` is the local value, `clocks` its clocks; `base`
    /// the last server-acknowledged copy; `remote` and `remote_clocks` the other side.
    /// Conflicts of `manual` fields are appended to `conflicts`; their local value stays.
    fn merge_into(
        &mut self,
        clocks: &mut Self::Clocks,
        base: &Self,
        remote: &Self,
        remote_clocks: &Self::Clocks,
        conflicts: &mut Vec<FieldConflict>,
    );

    /// Three-way merge returning a new value. See [`Syncable::merge_into`].
    fn merge3(
        base: &Self,
        local: &Self,
        local_clocks: &Self::Clocks,
        remote: &Self,
        remote_clocks: &Self::Clocks,
    ) -> Merged<Self> {
        let mut value = local.clone();
        let mut clocks = *local_clocks;
        let mut conflicts = Vec::new();
        value.merge_into(&mut clocks, base, remote, remote_clocks, &mut conflicts);
        Merged {
            value,
            clocks,
            conflicts,
        }
    }

    /// Brings the value to canonical form: `Vec` union fields sorted and deduplicated,
    /// timestamps truncated to microseconds. Stores call it before every write.
    fn normalize(&mut self);

    /// Checks values that no target can store or send: floats must be finite (JSON has
    /// no NaN or infinity, and MySQL stores neither). Stores call it before every write.
    ///
    /// # Errors
    /// [`InvalidValue`] naming the first `f32` or `f64` field (or `Option` of one) that
    /// holds NaN or an infinity. Floats inside `json` fields are not checked.
    fn validate(&self) -> Result<(), InvalidValue>;

    /// The record's synced fields by wire name.
    ///
    /// # Errors
    /// [`RecordError::Invalid`] if a field's value does not serialise to JSON (a `json`
    /// field whose `Serialize` fails, such as a map with non-string keys). The derived
    /// implementation never returns [`RecordError::Missing`].
    fn to_record(&self) -> Result<Record, RecordError>;

    /// Builds a value from a record; local-only (`skip`) fields get their `Default`.
    ///
    /// # Errors
    /// [`RecordError::Missing`] if a synced field is absent from `record` (an `Option`
    /// field must be present, as `null`); [`RecordError::Invalid`] if a field's value does
    /// not deserialise into its Rust type. The first failing field, in declaration order,
    /// is reported.
    fn from_record(record: &Record) -> Result<Self, RecordError>;
}

/// The result of [`Syncable::merge3`].
#[derive(Clone, Debug, PartialEq)]
pub struct Merged<T: Syncable> {
    /// The merged value (for conflicted `manual` fields: the local value).
    pub value: T,
    /// The merged clocks.
    pub clocks: T::Clocks,
    /// `manual` fields both sides changed to different values.
    pub conflicts: Vec<FieldConflict>,
}

/// A field-level patch generated for a [`Syncable`] type.
pub trait Patch:
    Clone + Debug + Default + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// One patch with the effect of `self` followed by `later` (for coalescing):
    /// sums add, `lww` keeps the later edit, `manual` keeps the final value and the first
    /// base, `union` composes adds and removes.
    fn compose(self, later: Self) -> Self;

    /// Whether the patch changes nothing.
    fn is_empty(&self) -> bool;

    /// The wire names of the fields the patch changes, in declaration order.
    fn fields(&self) -> Vec<&'static str>;
}

/// Per-field clocks generated for a [`Syncable`] type.
pub trait Clocks:
    Copy + Clone + Debug + Default + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// Clocks with every field stamped `hlc` (a record created at `hlc`).
    fn all(hlc: Hlc) -> Self;
    /// The greatest stamp of any field.
    fn latest(&self) -> Hlc;
}

/// A change that a patch cannot express.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiffError {
    /// The id of a record never changes.
    #[error("the id of a `{entity}` cannot change; create a new record instead")]
    IdChanged {
        /// The entity's wire name.
        entity: &'static str,
    },
    /// An `immutable` field is set at create and never patched.
    #[error(
        "field `{field}` of `{entity}` is immutable: it is set when the record is created and cannot be updated"
    )]
    ImmutableChanged {
        /// The entity's wire name.
        entity: &'static str,
        /// The field's wire name.
        field: &'static str,
    },
}

/// A record that does not fit the entity.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A synced field is missing from the record.
    #[error("`{entity}` record has no field `{field}`")]
    Missing {
        /// The entity's wire name.
        entity: &'static str,
        /// The field's wire name.
        field: &'static str,
    },
    /// A field holds a value of the wrong type.
    #[error("field `{field}` of `{entity}`: {source}")]
    Invalid {
        /// The entity's wire name.
        entity: &'static str,
        /// The field's wire name.
        field: &'static str,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
}

/// A value that cannot be synced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}` of `{entity}` {reason}")]
pub struct InvalidValue {
    /// The entity's wire name.
    pub entity: &'static str,
    /// The field's wire name.
    pub field: &'static str,
    /// What is wrong, phrased to follow the field name.
    pub reason: &'static str,
}

/// Checks the values of `record` against what the protocol accepts, whatever the
/// database behind either end: no string anywhere in it (a text field, a set element, a
/// key or value at any depth of a `json` field) holds U+0000, and every timestamp lies
/// in the years 0001 to 9999.
///
/// These are the values one supported database refuses where another stores them:
/// PostgreSQL's `text` and `jsonb` cannot hold U+0000 (SQLite can), and RFC 3339, the
/// timestamp format of the OpenAPI document, has four-digit years (PostgreSQL stops at
/// 294276, SQLite's text has no bound). So the protocol decides, and the same record is
/// refused the same way everywhere: the local store refuses it at the write, the server
/// with a 422 for that mutation alone.
///
/// # Errors
/// [`InvalidValue`] naming the first offending field.
pub fn check_record(
    entity: &'static sync_model::Entity,
    record: &Record,
) -> Result<(), InvalidValue> {
    use sync_model::{ScalarType, TypeKind};
    fn has_nul(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(a) => a.iter().any(has_nul),
            serde_json::Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            _ => false,
        }
    }
    fn bad_time(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => !crate::time::parse(s)
                .is_some_and(|t| (1..=9999).contains(&chrono::Datelike::year(&t.naive_utc()))),
            serde_json::Value::Array(a) => a.iter().any(bad_time),
            _ => false,
        }
    }
    for f in entity.synced_fields() {
        let Some(v) = record.get(&f.name) else {
            continue;
        };
        if has_nul(v) {
            return Err(InvalidValue {
                entity: &entity.name,
                field: &f.name,
                reason: "contains a NUL character (U+0000), which the protocol refuses (PostgreSQL cannot store it)",
            });
        }
        let timestamp = match &f.ty.kind {
            TypeKind::Scalar { scalar } => *scalar == ScalarType::Timestamp,
            TypeKind::Set { item, .. } => *item == ScalarType::Timestamp,
            _ => false,
        };
        if timestamp && bad_time(v) {
            return Err(InvalidValue {
                entity: &entity.name,
                field: &f.name,
                reason: "holds a timestamp outside the years 0001 to 9999 (RFC 3339), which the protocol refuses",
            });
        }
    }
    Ok(())
}
