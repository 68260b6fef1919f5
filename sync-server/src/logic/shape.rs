//! The members of a mutation's record, patch and clocks, checked against the entity's
//! schemas in the OpenAPI document (`<Entity>Record`, `<Entity>Patch`, `<Entity>Clocks`,
//! each `additionalProperties: false`): a member the document does not allow is refused,
//! never dropped. The values themselves are checked by the entity's types
//! ([`registry::check_record`], [`registry::apply_patch`]).

use super::*;
use sync_runtime::ops;
use sync_runtime::protocol::json_pointer;

/// A member of a mutation the document does not allow: where (a JSON Pointer into the
/// mutation) and why.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Misfit {
    pub(crate) pointer: String,
    pub(crate) detail: String,
}

fn misfit(tokens: &[&str], detail: String) -> Misfit {
    Misfit {
        pointer: json_pointer(tokens),
        detail,
    }
}

fn names<'a>(fields: impl Iterator<Item = &'a sync_model::Field>) -> String {
    fields
        .map(|f| format!("`{}`", f.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The model a request's client was built with, by its `sync-model-fingerprint` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClientModel {
    /// The server's own model, or no header: the document's schemas hold exactly.
    Current,
    /// An earlier model the server still serves: its records may lack the fields added
    /// since, which must have a default or be optional (the generator refuses any other
    /// added field), and take that value.
    Earlier,
}

/// The members of a mutation its `op` does not carry: `record` and `clocks` belong to a
/// create, `patch` to an update, `hlc` to a delete (the document's `<Entity>Create`,
/// `<Entity>Update`, `<Entity>Delete`).
pub(crate) fn op_members(m: &Mutation) -> Result<(), Misfit> {
    let present = [
        ("record", m.record.is_some()),
        ("clocks", m.clocks.is_some()),
        ("patch", m.patch.is_some()),
        ("hlc", m.hlc.is_some()),
        ("dot", m.dot.is_some()),
        ("dots", m.dots.is_some()),
        ("dot_gaps", m.dot_gaps.is_some()),
    ];
    let allowed: &[&str] = match m.op {
        MutationOp::Create => &["record", "clocks", "dot", "dots", "dot_gaps"],
        MutationOp::Update => &["patch", "dot"],
        MutationOp::Delete => &["hlc"],
    };
    let session_ok =
        |s: &str| s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if let Some(d) = &m.dot {
        if !session_ok(&d.session) {
            return Err(misfit(
                &["dot", "session"],
                "a dot's `session` is 16 lowercase hex digits".to_string(),
            ));
        }
        if d.seq == 0 {
            return Err(misfit(
                &["dot", "seq"],
                "a dot's `seq` counts from 1".to_string(),
            ));
        }
        if d.prev.is_some_and(|p| p >= d.seq) {
            return Err(misfit(
                &["dot", "prev"],
                "a dot's `prev` is below its `seq`".to_string(),
            ));
        }
    }
    if let Some(gaps) = &m.dot_gaps {
        let dots = m.dots.clone().unwrap_or_default();
        if let Err(why) = sync_runtime::protocol::check_dot_gaps(&dots, gaps) {
            return Err(misfit(&["dot_gaps"], why));
        }
    }
    if let Some((session, seq)) = m
        .dots
        .iter()
        .flatten()
        .find(|(s, seq)| !session_ok(s) || **seq == 0)
    {
        return Err(misfit(
            &["dots", session.as_str()],
            format!(
                "`dots` maps sessions (16 lowercase hex digits) to numbers from 1; not `{session}`: {seq}"
            ),
        ));
    }
    match present
        .iter()
        .find(|(name, here)| *here && !allowed.contains(name))
    {
        Some((name, _)) => Err(misfit(
            &[name],
            format!(
                "a `{}` carries {}; not `{name}`",
                m.op.as_str(),
                allowed
                    .iter()
                    .map(|a| format!("`{a}`"))
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        )),
        None => Ok(()),
    }
}

/// A create's `record`: every synced field, and nothing else (from a client of an
/// earlier model, fields with a default or optional ones may be missing).
pub(crate) fn record(
    e: &Entity,
    record: &sync_runtime::Record,
    model: ClientModel,
) -> Result<(), Misfit> {
    if let Some(key) = record
        .keys()
        .find(|k| e.synced_fields().all(|f| f.name != **k))
    {
        return Err(misfit(
            &["record", key],
            format!(
                "`{}` has no field `{key}`; its fields are {}",
                e.name,
                names(e.synced_fields())
            ),
        ));
    }
    let may_lack = |f: &sync_model::Field| {
        model == ClientModel::Earlier && (f.default.is_some() || f.ty.nullable)
    };
    if let Some(f) = e
        .synced_fields()
        .find(|f| !record.contains_key(&f.name) && !may_lack(f))
    {
        return Err(misfit(
            &["record"],
            format!(
                "the record lacks field `{}`; a create carries every field (`null` for an optional one)",
                f.name
            ),
        ));
    }
    Ok(())
}

/// An update's `patch`: an object of operations on fields that may change (not the id,
/// not an immutable field), each with the members of its field's merge strategy.
pub(crate) fn patch(e: &Entity, patch: &Json) -> Result<(), Misfit> {
    let Some(ops) = patch.as_object() else {
        return Err(misfit(&["patch"], "a patch is an object".into()));
    };
    let patchable = || e.synced_fields().filter(|f| !f.id && !f.immutable);
    for (key, op) in ops {
        let Some(f) = patchable().find(|f| f.name == *key) else {
            let why = match e.synced_fields().find(|f| f.name == *key) {
                Some(f) if f.id => "is the id, which never changes".to_string(),
                Some(_) => "is immutable: set when the record is created, never patched".into(),
                None => format!("is not a field of `{}`", e.name),
            };
            return Err(misfit(
                &["patch", key],
                format!("`{key}` {why}; a patch may change {}", names(patchable())),
            ));
        };
        let members = ops::op_members(f.merge);
        let list = members
            .iter()
            .map(|(m, _)| format!("`{m}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let Some(op) = op.as_object() else {
            return Err(misfit(
                &["patch", key],
                format!("the operation on `{key}` is an object with {list}"),
            ));
        };
        if let Some(m) = op.keys().find(|m| members.iter().all(|(n, _)| n != *m)) {
            return Err(misfit(
                &["patch", key, m],
                format!("an operation on `{key}` has the members {list}; not `{m}`"),
            ));
        }
        if let Some((m, _)) = members
            .iter()
            .find(|(m, required)| *required && !op.contains_key(*m))
        {
            return Err(misfit(
                &["patch", key],
                format!("the operation on `{key}` lacks `{m}` (it has {list})"),
            ));
        }
    }
    Ok(())
}

/// A create's `clocks`: an object stamping fields that merge by `lww` (and may change).
pub(crate) fn clocks(e: &Entity, clocks: &Json) -> Result<(), Misfit> {
    let Some(map) = clocks.as_object() else {
        return Err(misfit(&["clocks"], "`clocks` is an object".into()));
    };
    let stamped = || {
        e.synced_fields()
            .filter(|f| !f.id && !f.immutable && f.merge == sync_model::MergeStrategy::Lww)
    };
    if let Some(key) = map.keys().find(|k| stamped().all(|f| f.name != **k)) {
        return Err(misfit(
            &["clocks", key],
            format!(
                "`{key}` carries no clock; the stamped fields of `{}` are {}",
                e.name,
                names(stamped())
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task() -> Entity {
        let src = r#"
            #[derive(Syncable)]
            #[sync(table = "tasks")]
            struct Task {
                #[sync(id)]
                id: Uuid,
                #[sync(immutable)]
                created_at: DateTime<Utc>,
                title: String,
                #[sync(merge = "sum")]
                likes: i64,
                #[sync(merge = "union")]
                tags: BTreeSet<String>,
                note: Option<String>,
            }
        "#;
        crate::logic::entity_of(src)
    }

    fn rec(v: Json) -> sync_runtime::Record {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_record_holds_every_field_and_nothing_else() {
        let e = task();
        let full = json!({"id": "x", "created_at": "t", "title": "a", "likes": 0, "tags": [], "note": null});
        assert_eq!(record(&e, &rec(full.clone()), ClientModel::Current), Ok(()));
        let mut extra = full.clone();
        extra["priority"] = json!(9);
        let m = record(&e, &rec(extra), ClientModel::Earlier).unwrap_err();
        assert_eq!(m.pointer, "/record/priority");
        assert!(m.detail.contains("no field `priority`"), "{}", m.detail);
        let mut missing = full;
        missing.as_object_mut().unwrap().remove("note");
        let m = record(&e, &rec(missing.clone()), ClientModel::Current).unwrap_err();
        assert_eq!(m.pointer, "/record");
        assert!(m.detail.contains("`note`"), "{}", m.detail);
        // A client of an earlier model may lack an optional field, not a required one.
        assert_eq!(
            record(&e, &rec(missing.clone()), ClientModel::Earlier),
            Ok(())
        );
        missing.as_object_mut().unwrap().remove("title");
        assert!(record(&e, &rec(missing), ClientModel::Earlier).is_err());
    }

    #[test]
    fn a_patch_names_changeable_fields_with_their_strategys_members() {
        let e = task();
        let hlc = "0000000001000:00000:0000000000000001";
        assert_eq!(
            patch(
                &e,
                &json!({"title": {"set": "b", "hlc": hlc}, "likes": {"add": 2}, "tags": {"add": ["x"]}})
            ),
            Ok(())
        );
        for (p, pointer) in [
            (json!({"priority": {"set": 1}}), "/patch/priority"),
            (json!({"id": {"set": "y"}}), "/patch/id"),
            (json!({"created_at": {"set": "t"}}), "/patch/created_at"),
            (
                json!({"likes": {"add": 1, "extra": 1}}),
                "/patch/likes/extra",
            ),
            (json!({"likes": {"set": 1}}), "/patch/likes/set"),
            (json!({"title": {"set": "b"}}), "/patch/title"),
            (json!({"likes": 3}), "/patch/likes"),
            (json!([1]), "/patch"),
        ] {
            assert_eq!(patch(&e, &p).unwrap_err().pointer, pointer, "{p}");
        }
    }

    #[test]
    fn clocks_stamp_only_lww_fields() {
        let e = task();
        let hlc = "0000000001000:00000:0000000000000001";
        assert_eq!(clocks(&e, &json!({"title": hlc, "note": hlc})), Ok(()));
        assert_eq!(
            clocks(&e, &json!({"likes": hlc})).unwrap_err().pointer,
            "/clocks/likes"
        );
        assert_eq!(
            clocks(&e, &json!({"priority": hlc})).unwrap_err().pointer,
            "/clocks/priority"
        );
    }
}
