//! One `Syncable` type behind plain function pointers.
//!
//! The client store reads records back from SQLite and the reference server receives
//! them from the wire, both as JSON with an entity name; an [`ErasedEntity`] carries the
//! generated code of the matching type so either can call it without knowing the type.
//! It is the one type-erased view of an entity: the store and `sync-server` both use it,
//! and it needs neither SQLite nor an HTTP client.
//!
//! Records are [`Record`]s (field name to JSON value, the shape of `to_record`), clocks
//! are the JSON form of the type's `Clocks` (`{field: "hlc"}` for `lww` fields), and
//! patches the JSON form of its `Patch` (`{field: op}`; see DESIGN.md). Every function
//! reports a failure as a message naming what did not fit, because the caller turns it
//! into its own error (a store corruption, a 422 problem).

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sync_model::{Entity, TypeKind};

use crate::hlc::Hlc;
use crate::merge::FieldConflict;
use crate::protocol::MutationOp;
use crate::syncable::{Clocks, Patch, Record, Syncable};

/// What applying a patch to a stored record did ([`ErasedEntity::apply_patch`]).
#[derive(Debug, Clone, PartialEq)]
pub enum PatchOutcome {
    /// The new record and clocks.
    Applied {
        /// The record after the patch, canonical and validated.
        record: Record,
        /// Its clocks.
        clocks: Json,
    },
    /// `manual` fields hold third values: nothing was applied. The names of the fields.
    Conflict(Vec<String>),
}

/// A record merged from two sides: `(record, clocks, conflicts on manual fields)`.
pub type MergedRecord = (Record, Json, Vec<FieldConflict>);

type CheckRecordFn = fn(&'static Entity, Record, Option<Json>) -> Result<(Record, Json), String>;
type ApplyPatchFn = fn(&Record, &Json, &Json, bool) -> Result<PatchOutcome, String>;
type RebaseFn =
    fn(&Record, &Json, &[(MutationOp, String)]) -> Result<Option<(Record, Json)>, String>;
type MergeFn = fn(&Record, &Record, &Json, &Record, &Json) -> Result<MergedRecord, String>;
type DiffFn = fn(&Record, &Record, Hlc) -> Result<Option<String>, String>;
type TwinFn = fn(&Record, &Json, &Record, &Json) -> Result<MergedRecord, String>;

/// The generated code of one entity type, type-erased.
///
/// Build it with [`ErasedEntity::of`]; it is `Copy` (a reference to the model and six
/// function pointers).
#[derive(Clone, Copy)]
pub struct ErasedEntity {
    model: &'static Entity,
    check_record: CheckRecordFn,
    apply_patch: ApplyPatchFn,
    rebase: RebaseFn,
    merge: MergeFn,
    diff: DiffFn,
    twin: TwinFn,
}

impl std::fmt::Debug for ErasedEntity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErasedEntity")
            .field("entity", &self.model.name)
            .finish_non_exhaustive()
    }
}

impl ErasedEntity {
    /// The erased view of `T`.
    pub fn of<T: Syncable>() -> Self {
        ErasedEntity {
            model: T::model(),
            check_record: check_record::<T>,
            apply_patch: apply_patch::<T>,
            rebase: rebase::<T>,
            merge: merge::<T>,
            diff: diff::<T>,
            twin: twin::<T>,
        }
    }

    /// The entity's model (its name, table and fields).
    pub fn model(&self) -> &'static Entity {
        self.model
    }

    /// A record sent by a client, checked and brought to canonical form: fields an older
    /// client does not know get the value existing rows got when the field was added (its
    /// `default`, `null` or an empty set), the value is normalised and validated, and
    /// missing clocks become [`Hlc::ZERO`] for every `lww` field. Returns `(record,
    /// clocks)`.
    ///
    /// # Errors
    /// A message if the record does not fit the type, fails `validate`, or the clocks do
    /// not parse.
    pub fn check_record(
        &self,
        record: Record,
        clocks: Option<Json>,
    ) -> Result<(Record, Json), String> {
        (self.check_record)(self.model, record, clocks)
    }

    /// Applies a client's patch to the stored `record` with its `clocks`. With
    /// `same_version` (the client's base is the stored version) the patch applies as is;
    /// otherwise it is concurrent with what the record holds and merges by each field's
    /// rule (`apply_concurrent`), which may leave `manual` fields in conflict.
    ///
    /// # Errors
    /// A message if the stored record or clocks do not fit the type (`stored record: ...`),
    /// the patch does not parse (`invalid patch: ...`), or the result fails `validate`.
    pub fn apply_patch(
        &self,
        record: &Record,
        clocks: &Json,
        patch: &Json,
        same_version: bool,
    ) -> Result<PatchOutcome, String> {
        (self.apply_patch)(record, clocks, patch, same_version)
    }

    /// The server's record with still-pending local mutations applied on top, in order
    /// (`(op, outbox payload JSON)`); `None` if one of them deletes it.
    ///
    /// # Errors
    /// A message if the record or a payload does not fit the type.
    pub fn rebase(
        &self,
        record: &Record,
        clocks: &Json,
        pending: &[(MutationOp, String)],
    ) -> Result<Option<(Record, Json)>, String> {
        (self.rebase)(record, clocks, pending)
    }

    /// `merge3(base, local, local clocks, server, server clocks)`: the three-way merge of
    /// DESIGN.md's rule table, with the `manual` fields left in conflict.
    ///
    /// # Errors
    /// A message if one of the records does not fit the type.
    pub fn merge(
        &self,
        base: &Record,
        local: &Record,
        local_clocks: &Json,
        server: &Record,
        server_clocks: &Json,
    ) -> Result<MergedRecord, String> {
        (self.merge)(base, local, local_clocks, server, server_clocks)
    }

    /// The patch from `old` to `new` stamped with `hlc`, as outbox update payload JSON
    /// (`{"patch": ...}`); `None` if the two are equal.
    ///
    /// # Errors
    /// A message if a record does not fit the type or a value cannot be diffed.
    pub fn diff(&self, old: &Record, new: &Record, hlc: Hlc) -> Result<Option<String>, String> {
        (self.diff)(old, new, hlc)
    }

    /// Two creates of one id made without a common base, merged field by field like two
    /// concurrent updates from an empty base: `twin(local, local clocks, server, server
    /// clocks)`.
    ///
    /// # Errors
    /// A message if a record does not fit the type.
    pub fn twin(
        &self,
        local: &Record,
        local_clocks: &Json,
        server: &Record,
        server_clocks: &Json,
    ) -> Result<MergedRecord, String> {
        (self.twin)(local, local_clocks, server, server_clocks)
    }
}

/// Fills fields missing from an older client's record with the value existing rows got
/// when the field was added: its `default`, `null`, or an empty set.
fn fill_defaults(model: &Entity, record: &mut Record) {
    for f in model.synced_fields() {
        if record.contains_key(&f.name) {
            continue;
        }
        let v = match (&f.default, &f.ty.kind) {
            (Some(d), TypeKind::Json { .. }) => match d {
                Json::String(s) => serde_json::from_str(s).unwrap_or(Json::Null),
                other => other.clone(),
            },
            (Some(d), _) => d.clone(),
            (None, TypeKind::Set { .. }) => Json::Array(Vec::new()),
            (None, _) if f.ty.nullable => Json::Null,
            (None, _) => continue,
        };
        record.insert(f.name.clone(), v);
    }
}

fn check_record<T: Syncable>(
    model: &'static Entity,
    mut record: Record,
    clocks: Option<Json>,
) -> Result<(Record, Json), String> {
    fill_defaults(model, &mut record);
    let mut value = T::from_record(&record).map_err(|e| e.to_string())?;
    value.normalize();
    value.validate().map_err(|e| e.to_string())?;
    let clocks: T::Clocks = match clocks {
        Some(c) => serde_json::from_value(c).map_err(|e| format!("invalid clocks: {e}"))?,
        None => T::Clocks::all(Hlc::ZERO),
    };
    let record = value.to_record().map_err(|e| e.to_string())?;
    crate::syncable::check_record(model, &record).map_err(|e| e.to_string())?;
    Ok((
        record,
        serde_json::to_value(clocks).map_err(|e| e.to_string())?,
    ))
}

fn apply_patch<T: Syncable>(
    current: &Record,
    clocks: &Json,
    patch: &Json,
    same_version: bool,
) -> Result<PatchOutcome, String> {
    let mut value = T::from_record(current).map_err(|e| format!("stored record: {e}"))?;
    let mut clocks: T::Clocks =
        serde_json::from_value(clocks.clone()).map_err(|e| format!("stored clocks: {e}"))?;
    let patch: T::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| format!("invalid patch: {e}"))?;
    if same_version {
        value.apply(&patch);
        T::stamp(&mut clocks, &patch);
    } else {
        let conflicts = value.apply_concurrent(&mut clocks, &patch);
        if !conflicts.is_empty() {
            return Ok(PatchOutcome::Conflict(
                conflicts.iter().map(|s| (*s).to_string()).collect(),
            ));
        }
    }
    value.normalize();
    value.validate().map_err(|e| e.to_string())?;
    let record = value.to_record().map_err(|e| e.to_string())?;
    crate::syncable::check_record(T::model(), &record).map_err(|e| e.to_string())?;
    Ok(PatchOutcome::Applied {
        record,
        clocks: serde_json::to_value(clocks).map_err(|e| e.to_string())?,
    })
}

/// Any outbox payload, read loosely: a create's `record` and `clocks`, an update's
/// `patch`.
#[derive(Deserialize)]
pub(crate) struct AnyPayload {
    #[serde(default)]
    pub(crate) record: Option<Record>,
    #[serde(default)]
    pub(crate) clocks: Option<Json>,
    #[serde(default)]
    pub(crate) patch: Option<Json>,
}

fn rebase<T: Syncable>(
    server: &Record,
    clocks: &Json,
    pending: &[(MutationOp, String)],
) -> Result<Option<(Record, Json)>, String> {
    let mut value = T::from_record(server).map_err(|e| e.to_string())?;
    let mut clocks: T::Clocks = serde_json::from_value(clocks.clone()).unwrap_or_default();
    // Members of fields the model no longer has: an item sent before a migration
    // dropped the field keeps its body (its retry must hash as its first delivery), and
    // the server ignores them, so they are read as absent here too.
    let known = |members: &mut serde_json::Map<String, Json>| {
        members.retain(|k, _| T::model().synced_fields().any(|f| f.name == *k));
    };
    for (op, payload) in pending {
        let mut p: AnyPayload = serde_json::from_str(payload).map_err(|e| e.to_string())?;
        if let Some(r) = &mut p.record {
            known(r);
        }
        for v in [&mut p.clocks, &mut p.patch].into_iter().flatten() {
            if let Some(members) = v.as_object_mut() {
                known(members);
            }
        }
        match op {
            MutationOp::Create => {
                if let Some(r) = p.record {
                    value = T::from_record(&r).map_err(|e| e.to_string())?;
                }
                if let Some(c) = p.clocks {
                    clocks = serde_json::from_value(c).unwrap_or_default();
                }
            }
            MutationOp::Update => {
                if let Some(patch) = p.patch {
                    let patch: T::Patch =
                        serde_json::from_value(patch).map_err(|e| e.to_string())?;
                    value.apply(&patch);
                    T::stamp(&mut clocks, &patch);
                }
            }
            MutationOp::Delete => return Ok(None),
        }
    }
    value.normalize();
    Ok(Some((
        value.to_record().map_err(|e| e.to_string())?,
        serde_json::to_value(clocks).map_err(|e| e.to_string())?,
    )))
}

fn merge<T: Syncable>(
    base: &Record,
    local: &Record,
    local_clocks: &Json,
    server: &Record,
    server_clocks: &Json,
) -> Result<(Record, Json, Vec<FieldConflict>), String> {
    let base = T::from_record(base).map_err(|e| e.to_string())?;
    let local = T::from_record(local).map_err(|e| e.to_string())?;
    let server = T::from_record(server).map_err(|e| e.to_string())?;
    let lc: T::Clocks = serde_json::from_value(local_clocks.clone()).unwrap_or_default();
    let sc: T::Clocks = serde_json::from_value(server_clocks.clone()).unwrap_or_default();
    let m = T::merge3(&base, &local, &lc, &server, &sc);
    Ok((
        m.value.to_record().map_err(|e| e.to_string())?,
        serde_json::to_value(m.clocks).map_err(|e| e.to_string())?,
        m.conflicts,
    ))
}

/// Two creates of one id made without a common base, merged field by field like two
/// concurrent updates from an empty base (DESIGN.md): the local record becomes a patch
/// from nothing (`lww`: set with the field's stamp; `sum`: add the value; `union`: add
/// every element; `manual`: set, with no base the server's value could still hold) and
/// is applied onto the server's record as the server applies a concurrent patch. So
/// `lww` fields take the later stamp, sums add up, sets unite, and a `manual` field that
/// holds different values on the two sides is a conflict (base `null`), never a silent
/// pick. The id and `immutable` fields keep the server's values: the first create the
/// server accepted fixed them.
fn twin<T: Syncable>(
    local: &Record,
    local_clocks: &Json,
    server: &Record,
    server_clocks: &Json,
) -> Result<(Record, Json, Vec<FieldConflict>), String> {
    use sync_model::MergeStrategy;
    let zero = Json::String(Hlc::ZERO.to_string());
    let mut ops = serde_json::Map::new();
    for f in T::model().synced_fields().filter(|f| !f.id && !f.immutable) {
        let v = local.get(&f.name).cloned().unwrap_or(Json::Null);
        let op = match f.merge {
            MergeStrategy::Lww => serde_json::json!({
                "set": v,
                "hlc": local_clocks.get(&f.name).unwrap_or(&zero),
            }),
            MergeStrategy::Sum => serde_json::json!({ "add": v }),
            MergeStrategy::Union => serde_json::json!({ "add": v, "remove": [] }),
            MergeStrategy::Manual => serde_json::json!({ "set": v, "base": v }),
        };
        ops.insert(f.name.clone(), op);
    }
    let mut value = T::from_record(server).map_err(|e| e.to_string())?;
    let mut clocks: T::Clocks = serde_json::from_value(server_clocks.clone()).unwrap_or_default();
    let patch: T::Patch =
        serde_json::from_value(Json::Object(ops.clone())).map_err(|e| e.to_string())?;
    let mut conflicts = Vec::new();
    let clash = value.clone().apply_concurrent(&mut clocks.clone(), &patch);
    let patch = if clash.is_empty() {
        patch
    } else {
        for field in clash {
            ops.remove(field);
            conflicts.push(FieldConflict {
                field: field.to_string(),
                base: Json::Null,
                local: local.get(field).cloned().unwrap_or(Json::Null),
                remote: server.get(field).cloned().unwrap_or(Json::Null),
            });
        }
        serde_json::from_value(Json::Object(ops)).map_err(|e| e.to_string())?
    };
    let left = value.apply_concurrent(&mut clocks, &patch);
    debug_assert!(left.is_empty(), "conflicting fields were taken out");
    value.normalize();
    Ok((
        value.to_record().map_err(|e| e.to_string())?,
        serde_json::to_value(clocks).map_err(|e| e.to_string())?,
        conflicts,
    ))
}

#[derive(Serialize)]
struct UpdatePayloadRef<'a, P> {
    patch: &'a P,
}

fn diff<T: Syncable>(old: &Record, new: &Record, hlc: Hlc) -> Result<Option<String>, String> {
    let old = T::from_record(old).map_err(|e| e.to_string())?;
    let new = T::from_record(new).map_err(|e| e.to_string())?;
    let patch = T::diff(&old, &new, hlc).map_err(|e| e.to_string())?;
    Ok((!patch.is_empty()).then(|| {
        serde_json::to_string(&UpdatePayloadRef { patch: &patch })
            .expect("a patch always serialises")
    }))
}
