//! syncgen's client runtime.
//!
//! Annotate a struct with `#[derive(Syncable)]` and per-field merge rules; the derive
//! generates, on the traits of this crate, a typed field-level patch, `diff`, `apply`,
//! `compose` (for coalescing the outbox) and a three-way `merge3` built from the plain
//! merge primitives in [`merge`].
//!
//! ```
//! use std::collections::BTreeSet;
//! use sync_runtime::prelude::*;
//!
//! #[derive(Syncable, Clone, Debug, PartialEq)]
//! #[sync(entity = "task")]
//! pub struct Task {
//!     #[sync(id)]
//!     pub id: Uuid,
//!     pub title: String,                   // lww is the default
//!     #[sync(merge = "union")]
//!     pub tags: BTreeSet<String>,
//!     #[sync(merge = "sum")]
//!     pub likes: i64,
//!     #[sync(merge = "manual")]
//!     pub price_cents: i64,
//! }
//!
//! let clock = HlcClock::new(NodeId(1));
//! let base = Task { id: Uuid::now_v7(), title: "Buy milk".into(), tags: BTreeSet::new(), likes: 0, price_cents: 100 };
//!
//! // Device A renames and likes; device B tags and likes.
//! let mut a = base.clone();
//! a.title = "Buy oat milk".into();
//! a.likes += 1;
//! let mut b = base.clone();
//! b.tags.insert("shopping".into());
//! b.likes += 2;
//!
//! let patch = Task::diff(&base, &a, clock.now()).unwrap();
//! assert_eq!(patch.fields(), ["title", "likes"]);
//!
//! let clocks = TaskClocks::all(Hlc::ZERO);
//! let merged = Task::merge3(&base, &a, &clocks, &b, &clocks);
//! assert_eq!(merged.value.title, "Buy oat milk");
//! assert_eq!(merged.value.likes, 3);
//! assert!(merged.value.tags.contains("shopping"));
//! assert!(merged.conflicts.is_empty());
//! ```
//!
//! The field types syncgen maps are listed in `sync_model`; timestamps are
//! `chrono::DateTime<Utc>` (re-exported as [`chrono`]) because every database driver the
//! toolkit uses maps it natively, and they are kept to microseconds, the precision every
//! target database stores.

pub mod column;
#[cfg(feature = "engine")]
pub mod engine;
pub mod erased;
pub mod hlc;
pub mod merge;
pub mod migrations;
pub mod ops;
pub mod protocol;
#[cfg(feature = "sqlite")]
pub mod store;
mod syncable;
pub mod text;
pub mod time;

pub use chrono;
pub use sync_derive::Syncable;
pub use sync_model as model;
pub use syncable::{
    Clocks, DiffError, InvalidValue, Merged, Patch, Record, RecordError, Syncable, check_record,
};
pub use uuid;

/// What an application imports: `use sync_runtime::prelude::*;`.
pub mod prelude {
    pub use crate::hlc::{Hlc, HlcClock, NodeId};
    pub use crate::merge::FieldConflict;
    /// The local store and its queries (with the `sqlite` feature).
    #[cfg(feature = "sqlite")]
    pub use crate::store::{LocalStore, Query};
    pub use crate::syncable::{Clocks as _, Patch as _, Syncable};
    pub use chrono::{DateTime, Utc};
    pub use sync_derive::Syncable;
    pub use uuid::Uuid;
}

/// Items used by the code `#[derive(Syncable)]` generates. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::hlc::{FieldKey, Hlc, deserialize_clocks, serialize_clocks};
    pub use crate::merge::{
        FieldConflict, MergeValue, UnionSet, lww_into, lww_json_into, lww_json_op_wins,
        lww_op_wins, manual_into, manual_json_into, manual_json_op_conflicts, manual_op_conflicts,
        normalize_timestamp, sum_into, union_into,
    };
    pub use crate::ops::*;
    pub use crate::syncable::{
        Clocks, DiffError, InvalidValue, Merged, Patch, Record, RecordError, Syncable,
    };
    pub use schemars;
    pub use serde;
    pub use serde_json;
    pub use sync_model;
    pub use uuid::Uuid;

    /// What `#[derive(Syncable)]` puts in place of the generated patch and clocks when
    /// the struct's `#[sync(...)]` attributes are wrong: the derive reports the error once,
    /// and code that uses `Task`, `TaskPatch` or `TaskClocks` does not fail a second
    /// time (as thiserror and clap emit a fallback impl). Never constructed by a
    /// program that compiles.
    #[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Unavailable;

    impl Patch for Unavailable {
        fn compose(self, _later: Self) -> Self {
            self
        }
        fn is_empty(&self) -> bool {
            true
        }
        fn fields(&self) -> Vec<&'static str> {
            Vec::new()
        }
    }

    impl Clocks for Unavailable {
        fn all(_hlc: Hlc) -> Self {
            Unavailable
        }
        fn latest(&self) -> Hlc {
            Hlc::ZERO
        }
    }

    /// Parses the model JSON the derive embeds.
    pub fn model_from_json(json: &str) -> sync_model::Entity {
        serde_json::from_str(json).expect("the derive embeds a valid model")
    }

    /// Reads one field from a record.
    pub fn field_from_record<T: serde::de::DeserializeOwned>(
        record: &Record,
        entity: &'static str,
        field: &'static str,
    ) -> Result<T, RecordError> {
        let value = record
            .get(field)
            .ok_or(RecordError::Missing { entity, field })?;
        T::deserialize(value).map_err(|source| RecordError::Invalid {
            entity,
            field,
            source,
        })
    }

    /// Writes one field to a record.
    pub fn field_to_record<T: serde::Serialize>(
        record: &mut Record,
        entity: &'static str,
        field: &'static str,
        value: &T,
    ) -> Result<(), RecordError> {
        let v = serde_json::to_value(value).map_err(|source| RecordError::Invalid {
            entity,
            field,
            source,
        })?;
        record.insert(field.to_owned(), v);
        Ok(())
    }

    /// A float field's value must be finite.
    pub trait CheckFinite {
        /// Whether the value is finite (or absent).
        fn is_finite_value(&self) -> bool;
    }
    impl CheckFinite for f32 {
        fn is_finite_value(&self) -> bool {
            self.is_finite()
        }
    }
    impl CheckFinite for f64 {
        fn is_finite_value(&self) -> bool {
            self.is_finite()
        }
    }
    impl<T: CheckFinite> CheckFinite for Option<T> {
        fn is_finite_value(&self) -> bool {
            self.as_ref().is_none_or(T::is_finite_value)
        }
    }

    /// Fails unless a float field is finite.
    pub fn check_finite<T: CheckFinite>(
        value: &T,
        entity: &'static str,
        field: &'static str,
    ) -> Result<(), InvalidValue> {
        if value.is_finite_value() {
            Ok(())
        } else {
            Err(InvalidValue {
                entity,
                field,
                reason: "is not a finite number (NaN and infinity cannot be stored or sent)",
            })
        }
    }

    /// Normalises a timestamp or an optional one.
    pub trait NormalizeTimestamp {
        /// Truncates to microseconds.
        fn normalize_timestamp(&mut self);
    }
    impl NormalizeTimestamp for chrono::DateTime<chrono::Utc> {
        fn normalize_timestamp(&mut self) {
            normalize_timestamp(self)
        }
    }
    impl NormalizeTimestamp for Option<chrono::DateTime<chrono::Utc>> {
        fn normalize_timestamp(&mut self) {
            if let Some(t) = self {
                normalize_timestamp(t)
            }
        }
    }
}
