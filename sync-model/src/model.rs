//! The entity model: what one `#[derive(Syncable)]` struct means for sync.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A set of entities that are synced together (one application's model).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// The entities, in source order.
    pub entities: Vec<Entity>,
}

impl Model {
    /// The entity with this wire name, if any.
    pub fn entity(&self, wire_name: &str) -> Option<&Entity> {
        self.entities.iter().find(|e| e.name == wire_name)
    }
}

/// One syncable entity: a Rust struct, its wire name and its table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Entity {
    /// The Rust struct's name (`Task`).
    pub rust_name: String,
    /// The wire name used in the protocol (`task`); `#[sync(entity = "...")]`.
    pub name: String,
    /// The SQL table name (`tasks`); `#[sync(table = "...")]`.
    pub table: String,
    /// How the outbox keeps this entity's pending mutations.
    pub outbox: OutboxMode,
    /// Every field of the struct, in declaration order, including local-only (`skip`) fields.
    pub fields: Vec<Field>,
    /// The struct's doc comment, if any (not part of the fingerprint).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub docs: String,
    /// The wire name this entity had before (`#[sync(renamed_from = "...")]` on the
    /// struct), so that migrations rename its tables and data in flight instead of
    /// dropping one entity and creating another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renamed_from: Option<String>,
    /// Which scope each record belongs to (`#[sync(scope = "...")]` on the struct): the
    /// unit of sharing and partial sync. Left out of the serialised model (and so of the
    /// fingerprint) when it is the default, [`ScopeRule::Account`].
    #[serde(default, skip_serializing_if = "ScopeRule::is_account")]
    pub scope: ScopeRule,
}

/// Which scope a record belongs to: the unit that is shared with principals and that a
/// device subscribes to (issue "Sharing and partial sync").
///
/// A scope is derived from the record itself, so that the client, the server and the
/// CLI agree on it without application code: a scope root is its own scope (a project),
/// and a record of another entity lives in the scope of the record one of its fields
/// references (a task in its project's, a comment in its task's, so in the project's).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case", tag = "rule")]
pub enum ScopeRule {
    /// Every record is in its account's one scope: the default, and the behaviour of a
    /// model that declares no scopes.
    #[default]
    Account,
    /// Each record is a scope of its own, named by its id: `#[sync(scope = "self")]`.
    Root,
    /// The scope of the record this field references: `#[sync(scope = "project_id")]`.
    /// The field is a non-optional `references` field, and the entity it references has
    /// a scope rule other than [`ScopeRule::Account`] (checked by
    /// [`validate_model`](crate::validate_model)).
    Via {
        /// The field's wire name.
        field: String,
    },
}

impl ScopeRule {
    /// Whether this is the default rule, [`ScopeRule::Account`].
    pub fn is_account(&self) -> bool {
        matches!(self, ScopeRule::Account)
    }
}

impl Model {
    /// The entity whose records are the scopes of `entity`'s records: itself for a
    /// [`ScopeRule::Root`], the end of the chain of [`ScopeRule::Via`] references
    /// otherwise, and `None` for [`ScopeRule::Account`] or a chain that does not end at a
    /// root (an unknown entity or field, a cycle: see
    /// [`validate_model`](crate::validate_model)). Also returns the fields followed, as
    /// `(entity wire name, field wire name)`, in order.
    pub fn scope_root<'a>(
        &'a self,
        entity: &'a Entity,
    ) -> Option<(&'a Entity, Vec<(&'a str, &'a str)>)> {
        let mut hops = Vec::new();
        let mut at = entity;
        loop {
            match &at.scope {
                ScopeRule::Account => return None,
                ScopeRule::Root => return Some((at, hops)),
                ScopeRule::Via { field } => {
                    if hops.len() > self.entities.len() {
                        return None;
                    }
                    let target = at.field(field)?.references.as_deref()?;
                    hops.push((at.name.as_str(), field.as_str()));
                    at = self.entity(target)?;
                }
            }
        }
    }
}

impl Entity {
    /// The field marked `#[sync(id)]`.
    ///
    /// # Panics
    /// Never for an entity produced by the parser, which rejects entities without exactly one id.
    pub fn id_field(&self) -> &Field {
        self.fields
            .iter()
            .find(|f| f.id)
            .expect("a parsed entity always has exactly one id field")
    }

    /// The fields that take part in sync (every field but `skip` ones), in order.
    pub fn synced_fields(&self) -> impl Iterator<Item = &Field> {
        self.fields.iter().filter(|f| !f.skip)
    }

    /// The field with this wire name.
    pub fn field(&self, wire_name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| !f.skip && f.name == wire_name)
    }
}

/// How the client's outbox keeps pending mutations of an entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum OutboxMode {
    /// Pending patches to one record are composed into one mutation (the default).
    #[default]
    Coalesce,
    /// Every mutation is kept and sent in order (for audit trails).
    History,
}

/// One field of an entity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Field {
    /// The Rust field name.
    pub rust_name: String,
    /// The wire name in records and patches; `#[sync(rename = "...")]`.
    pub name: String,
    /// The SQL column name; `#[sync(column = "...")]`.
    pub column: String,
    /// The logical type, independent of Rust and SQL.
    pub ty: FieldType,
    /// How concurrent edits of this field merge.
    pub merge: MergeStrategy,
    /// This field is the record's identity (`#[sync(id)]`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub id: bool,
    /// Local-only: never stored in sync tables, never sent (`#[sync(skip)]`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub skip: bool,
    /// Set when the record is created and never patched (`#[sync(immutable)]`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub immutable: bool,
    /// The wire name of the entity whose id this field holds (`#[sync(references = "...")]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub references: Option<String>,
    /// The wire name this field had before (`#[sync(renamed_from = "...")]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renamed_from: Option<String>,
    /// The value existing rows get when this field is added (`#[sync(default = ...)]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
    /// The field's doc comment, if any (not part of the fingerprint).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub docs: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A field's logical type, with its nullability.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldType {
    /// What kind of value the field holds.
    pub kind: TypeKind,
    /// `Option<T>`: the column is nullable and `null` is a value.
    #[serde(default, skip_serializing_if = "is_false")]
    pub nullable: bool,
}

/// What kind of value a field holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TypeKind {
    /// A single value.
    Scalar {
        /// The scalar type.
        scalar: ScalarType,
    },
    /// A collection of distinct scalars (`BTreeSet`, `HashSet`, or a `Vec` under `union`).
    Set {
        /// The Rust collection it comes from.
        collection: Collection,
        /// The item type.
        item: ScalarType,
    },
    /// Any serde type, stored and sent as JSON (`#[sync(json)]`).
    Json {
        /// The Rust type as written in the source, for documentation.
        rust_type: String,
    },
}

/// The scalar types every target database can round-trip exactly.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ScalarType {
    /// `bool`
    Bool,
    /// `i8`
    I8,
    /// `i16`
    I16,
    /// `i32`
    I32,
    /// `i64`
    I64,
    /// `u8`
    U8,
    /// `u16`
    U16,
    /// `u32`
    U32,
    /// `f32`
    F32,
    /// `f64`
    F64,
    /// `String`
    String,
    /// `uuid::Uuid`
    Uuid,
    /// `chrono::DateTime<Utc>`, kept to microsecond precision.
    Timestamp,
    /// `Vec<u8>`
    Bytes,
}

impl ScalarType {
    /// Integer or float: can be merged with `sum`.
    pub fn is_numeric(self) -> bool {
        self.is_integer() || matches!(self, ScalarType::F32 | ScalarType::F64)
    }

    /// An integer type.
    pub fn is_integer(self) -> bool {
        matches!(
            self,
            ScalarType::I8
                | ScalarType::I16
                | ScalarType::I32
                | ScalarType::I64
                | ScalarType::U8
                | ScalarType::U16
                | ScalarType::U32
        )
    }

    /// The Rust spelling of the type.
    pub fn rust_name(self) -> &'static str {
        match self {
            ScalarType::Bool => "bool",
            ScalarType::I8 => "i8",
            ScalarType::I16 => "i16",
            ScalarType::I32 => "i32",
            ScalarType::I64 => "i64",
            ScalarType::U8 => "u8",
            ScalarType::U16 => "u16",
            ScalarType::U32 => "u32",
            ScalarType::F32 => "f32",
            ScalarType::F64 => "f64",
            ScalarType::String => "String",
            ScalarType::Uuid => "Uuid",
            ScalarType::Timestamp => "DateTime<Utc>",
            ScalarType::Bytes => "Vec<u8>",
        }
    }
}

/// The Rust collection behind a set-typed field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Collection {
    /// `std::collections::BTreeSet<T>`
    BTreeSet,
    /// `std::collections::HashSet<T>`
    HashSet,
    /// `Vec<T>`: kept sorted and without duplicates, so it behaves as a set.
    Vec,
}

/// How concurrent edits of a field are merged. See the table in `DESIGN.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum MergeStrategy {
    /// Last writer wins, by hybrid logical clock; ties broken by node id, then by value.
    #[default]
    Lww,
    /// Concurrent increments add up: `local + remote - base`.
    Sum,
    /// Set union with removals: additions by either side are kept, removals by either side stay removed.
    Union,
    /// Two different concurrent edits are a conflict for the user to resolve.
    Manual,
}

impl MergeStrategy {
    /// Every strategy, in the order of the docs.
    pub const ALL: [MergeStrategy; 4] = [
        MergeStrategy::Lww,
        MergeStrategy::Sum,
        MergeStrategy::Union,
        MergeStrategy::Manual,
    ];

    /// The attribute spelling (`"lww"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            MergeStrategy::Lww => "lww",
            MergeStrategy::Sum => "sum",
            MergeStrategy::Union => "union",
            MergeStrategy::Manual => "manual",
        }
    }
}

impl std::fmt::Display for MergeStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
