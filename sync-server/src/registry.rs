//! The server's side of the registered entity types: the server receives `entity_type`
//! strings and dispatches to the generated code of the matching `Syncable` type through
//! `sync_runtime`'s [`ErasedEntity`] (the one type-erased view, shared with the client
//! store); what it adds is the bound on stamps from its future.

use serde_json::Value as Json;
use sync_runtime::Record;
use sync_runtime::erased::{ErasedEntity, PatchOutcome};
use sync_runtime::hlc::Hlc;

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

/// A client's record checked by its entity's generated code
/// ([`ErasedEntity::check_record`]), with stamps from the server's future brought back
/// to `max_millis` first ([`bound`]).
pub(crate) fn check_record(
    entity: &ErasedEntity,
    record: Record,
    clocks: Option<Json>,
    max_millis: u64,
) -> Result<(Record, Json), String> {
    let clocks = clocks.map(|mut c| {
        bound_clocks(&mut c, max_millis);
        c
    });
    entity.check_record(record, clocks)
}

/// A client's patch applied by its entity's generated code
/// ([`ErasedEntity::apply_patch`]), with stamps from the server's future brought back to
/// `max_millis` first ([`bound`]).
pub(crate) fn apply_patch(
    entity: &ErasedEntity,
    current: &Record,
    clocks: &Json,
    patch: &Json,
    same_version: bool,
    max_millis: u64,
) -> Result<PatchOutcome, String> {
    entity.apply_patch(
        current,
        clocks,
        &bound_patch(patch, max_millis),
        same_version,
    )
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
