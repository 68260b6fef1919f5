//! The registered entity types, type-erased: the server receives `entity_type` strings
//! and dispatches to the generated code of the matching `Syncable` type.

use serde_json::Value as Json;
use sync_model::{Entity, TypeKind};
use sync_runtime::hlc::Hlc;
use sync_runtime::{Clocks, Record, Syncable};

/// What applying a patch to the server's record did.
pub(crate) enum PatchOutcome {
    /// The new record and clocks.
    Applied { record: Record, clocks: Json },
    /// `manual` fields hold third values: nothing applied.
    Conflict(Vec<String>),
}

/// Checks a client's record: `(model, record, clocks, latest stamp millis) -> (canonical
/// record, clocks)`.
pub(crate) type CheckRecord =
    fn(&'static Entity, Record, Option<Json>, u64) -> Result<(Record, Json), String>;

/// Applies a patch: `(record, clocks, patch, same version, latest stamp millis) -> outcome`.
pub(crate) type ApplyPatch = fn(&Record, &Json, &Json, bool, u64) -> Result<PatchOutcome, String>;

/// Brings a stamp from the server's future back to `max_millis` (the server's time plus
/// its skew bound). The distance it lay beyond becomes the counter, so stamps of one
/// device keep their order when several are brought back at once (an earlier edit must
/// not tie with, or beat, a later one); the node stays.
pub(crate) fn bound(text: &str, max_millis: u64) -> Option<String> {
    let h: Hlc = text.parse().ok()?;
    (h.millis > max_millis).then(|| {
        let beyond = u32::try_from(h.millis - max_millis).unwrap_or(u32::MAX);
        Hlc::new(max_millis, beyond, h.node).to_string()
    })
}

/// [`bound`] on every stamp of a clocks object (`{field: stamp}`).
fn bound_clocks(clocks: &mut Json, max_millis: u64) {
    if let Some(map) = clocks.as_object_mut() {
        for v in map.values_mut() {
            if let Some(b) = v.as_str().and_then(|t| bound(t, max_millis)) {
                *v = Json::String(b);
            }
        }
    }
}

/// [`bound`] on the stamp of every `lww` operation of a patch (`{field: {set, hlc}}`).
fn bound_patch(patch: &Json, max_millis: u64) -> std::borrow::Cow<'_, Json> {
    let late = |op: &Json| {
        op.get("hlc")
            .and_then(Json::as_str)
            .and_then(|t| bound(t, max_millis))
    };
    let Some(map) = patch.as_object() else {
        return std::borrow::Cow::Borrowed(patch);
    };
    if !map.values().any(|op| late(op).is_some()) {
        return std::borrow::Cow::Borrowed(patch);
    }
    let mut out = patch.clone();
    for op in out.as_object_mut().expect("an object").values_mut() {
        if let Some(b) = late(op) {
            op["hlc"] = Json::String(b);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The generated functions of one entity, behind plain function pointers.
pub(crate) struct EntityOps {
    pub(crate) model: &'static Entity,
    /// A client's record, checked and brought to canonical form (fields an older client
    /// does not know get their defaults).
    pub(crate) check_record: CheckRecord,
    /// Applies a client's patch to the server's record.
    pub(crate) apply_patch: ApplyPatch,
}

impl EntityOps {
    pub(crate) fn of<T: Syncable>() -> Self {
        EntityOps {
            model: T::model(),
            check_record: check_record::<T>,
            apply_patch: apply_patch::<T>,
        }
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
    max_millis: u64,
) -> Result<(Record, Json), String> {
    let clocks = clocks.map(|mut c| {
        bound_clocks(&mut c, max_millis);
        c
    });
    fill_defaults(model, &mut record);
    let mut value = T::from_record(&record).map_err(|e| e.to_string())?;
    value.normalize();
    value.validate().map_err(|e| e.to_string())?;
    let clocks: T::Clocks = match clocks {
        Some(c) => serde_json::from_value(c).map_err(|e| format!("invalid clocks: {e}"))?,
        None => T::Clocks::all(Hlc::ZERO),
    };
    let record = value.to_record().map_err(|e| e.to_string())?;
    sync_runtime::check_record(model, &record).map_err(|e| e.to_string())?;
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
    max_millis: u64,
) -> Result<PatchOutcome, String> {
    let patch = bound_patch(patch, max_millis);
    let mut value = T::from_record(current).map_err(|e| format!("stored record: {e}"))?;
    let mut clocks: T::Clocks =
        serde_json::from_value(clocks.clone()).map_err(|e| format!("stored clocks: {e}"))?;
    let patch: T::Patch =
        serde_json::from_value(patch.into_owned()).map_err(|e| format!("invalid patch: {e}"))?;
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
    sync_runtime::check_record(T::model(), &record).map_err(|e| e.to_string())?;
    Ok(PatchOutcome::Applied {
        record,
        clocks: serde_json::to_value(clocks).map_err(|e| e.to_string())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_runtime::hlc::NodeId;

    #[test]
    fn bounded_stamps_keep_their_order_and_the_bound() {
        let node = NodeId(7);
        let max = 1_000_000;
        let early = Hlc::new(max + 5_000, 0, node).to_string();
        let late = Hlc::new(max + 9_000, 0, node).to_string();
        let (e, l): (Hlc, Hlc) = (
            bound(&early, max).unwrap().parse().unwrap(),
            bound(&late, max).unwrap().parse().unwrap(),
        );
        assert!(e < l, "{e} < {l}");
        assert_eq!((e.millis, l.millis, e.node), (max, max, node));
        assert_eq!(
            bound(&Hlc::new(max, 3, node).to_string(), max),
            None,
            "within the bound"
        );
    }
}
