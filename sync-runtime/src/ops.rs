//! Field operations: what a patch stores for each changed field, by merge strategy.
//!
//! A patch records *operations*, not values, so the server can apply it safely on top of
//! a record that moved on since the client last saw it (see `DESIGN.md`).
//!
//! | strategy | operation | JSON |
//! |---|---|---|
//! | `lww` | [`LwwOp`] | `{"set": value, "hlc": "..."}` |
//! | `sum` | [`SumOp`] | `{"add": delta}` |
//! | `union` | [`UnionOp`] | `{"add": [...], "remove": [...]}` |
//! | `manual` | [`ManualOp`] | `{"set": value, "base": previous}` |

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::hlc::Hlc;
use crate::merge::{MergeValue, SumValue, UnionSet};

/// `lww`: set the field to `set`, stamped with the edit's clock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LwwOp<T> {
    /// The new value.
    pub set: T,
    /// When the edit was made (hybrid logical clock).
    pub hlc: Hlc,
}

/// `sum`: add `add` to the field (may be negative).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SumOp<T> {
    /// The delta.
    pub add: T,
}

/// `union`: remove `remove`, then add `add` (the two never share an item).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(bound = "S: JsonSchema + Default + Serialize")]
pub struct UnionOp<S> {
    /// Items to add.
    #[serde(default)]
    pub add: S,
    /// Items to remove.
    #[serde(default)]
    pub remove: S,
}

/// `manual`: set the field to `set`, replacing `base`. A server that holds another value
/// than `base` reports a conflict instead of applying it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ManualOp<T> {
    /// The new value.
    pub set: T,
    /// The value the edit replaced.
    pub base: T,
}

/// The members of a field's operation object in a patch, by the field's merge strategy,
/// and which of them are required: `lww` `{set, hlc}`, `sum` `{add}`, `union`
/// `{add?, remove?}`, `manual` `{set, base}` (the op types above; the OpenAPI document's
/// op schemas list the same).
pub fn op_members(strategy: sync_model::MergeStrategy) -> &'static [(&'static str, bool)] {
    use sync_model::MergeStrategy as M;
    match strategy {
        M::Lww => &[("set", true), ("hlc", true)],
        M::Sum => &[("add", true)],
        M::Union => &[("add", false), ("remove", false)],
        M::Manual => &[("set", true), ("base", true)],
    }
}

/// The `lww` operation for `old -> new`, if the value changed.
pub fn lww_diff<T: MergeValue>(old: &T, new: &T, hlc: Hlc) -> Option<LwwOp<T>> {
    (!old.same(new)).then(|| LwwOp {
        set: new.clone(),
        hlc,
    })
}

/// The `lww` operation of a `#[sync(json)]` field, compared by JSON value.
pub fn lww_json_diff<T: Serialize + Clone>(old: &T, new: &T, hlc: Hlc) -> Option<LwwOp<T>> {
    (serde_json::to_value(old).ok() != serde_json::to_value(new).ok()).then(|| LwwOp {
        set: new.clone(),
        hlc,
    })
}

/// Applies an `lww` operation.
pub fn lww_apply<T: Clone>(value: &mut T, op: &LwwOp<T>) {
    value.clone_from(&op.set);
}

/// Composes two `lww` operations: the later edit wins (by clock, then by order).
pub fn lww_compose<T>(earlier: LwwOp<T>, later: LwwOp<T>) -> LwwOp<T> {
    if earlier.hlc > later.hlc {
        earlier
    } else {
        later
    }
}

/// The `sum` operation for `old -> new`, if the value changed.
pub fn sum_diff<T: SumValue>(old: &T, new: &T) -> Option<SumOp<T>> {
    (old != new).then(|| SumOp { add: new.sub(*old) })
}

/// Applies a `sum` operation.
pub fn sum_apply<T: SumValue>(value: &mut T, op: &SumOp<T>) {
    *value = value.add(op.add);
}

/// Composes two `sum` operations: the deltas add up.
pub fn sum_compose<T: SumValue>(earlier: SumOp<T>, later: SumOp<T>) -> SumOp<T> {
    SumOp {
        add: earlier.add.add(later.add),
    }
}

/// The `union` operation for `old -> new`, if the set changed.
pub fn union_diff<S: UnionSet>(old: &S, new: &S) -> Option<UnionOp<S>> {
    let (add, remove) = S::diff(old, new);
    (!add.is_empty() || !remove.is_empty()).then_some(UnionOp { add, remove })
}

/// Applies a `union` operation.
pub fn union_apply<S: UnionSet>(value: &mut S, op: &UnionOp<S>) {
    value.apply(&op.add, &op.remove);
}

/// Composes two `union` operations so that applying the result equals applying both:
/// `add = (add1 − remove2) ∪ add2`, `remove = (remove1 − add2) ∪ remove2`.
pub fn union_compose<S: UnionSet>(earlier: UnionOp<S>, later: UnionOp<S>) -> UnionOp<S> {
    UnionOp {
        add: earlier.add.minus(&later.remove).union(&later.add),
        remove: earlier.remove.minus(&later.add).union(&later.remove),
    }
}

/// The `manual` operation for `old -> new`, if the value changed.
pub fn manual_diff<T: MergeValue>(old: &T, new: &T) -> Option<ManualOp<T>> {
    (!old.same(new)).then(|| ManualOp {
        set: new.clone(),
        base: old.clone(),
    })
}

/// The `manual` operation of a `#[sync(json)]` field, compared by JSON value.
pub fn manual_json_diff<T: Serialize + Clone>(old: &T, new: &T) -> Option<ManualOp<T>> {
    (serde_json::to_value(old).ok() != serde_json::to_value(new).ok()).then(|| ManualOp {
        set: new.clone(),
        base: old.clone(),
    })
}

/// Applies a `manual` operation.
pub fn manual_apply<T: Clone>(value: &mut T, op: &ManualOp<T>) {
    value.clone_from(&op.set);
}

/// Composes two `manual` operations: the final value, replacing the first base.
pub fn manual_compose<T>(earlier: ManualOp<T>, later: ManualOp<T>) -> ManualOp<T> {
    ManualOp {
        set: later.set,
        base: earlier.base,
    }
}

/// Composes two optional operations of one field with `f`.
pub fn compose_opt<O>(
    earlier: Option<O>,
    later: Option<O>,
    f: impl FnOnce(O, O) -> O,
) -> Option<O> {
    match (earlier, later) {
        (Some(e), Some(l)) => Some(f(e, l)),
        (e, None) => e,
        (None, l) => l,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn wire_forms() {
        let op = SumOp { add: -3i64 };
        assert_eq!(serde_json::to_string(&op).unwrap(), r#"{"add":-3}"#);
        let op = UnionOp {
            add: BTreeSet::from(["a".to_string()]),
            remove: BTreeSet::new(),
        };
        assert_eq!(
            serde_json::to_string(&op).unwrap(),
            r#"{"add":["a"],"remove":[]}"#
        );
        let op: UnionOp<BTreeSet<String>> = serde_json::from_str(r#"{"remove":["x"]}"#).unwrap();
        assert!(op.add.is_empty());
        assert!(serde_json::from_str::<SumOp<i64>>(r#"{"add":1,"x":2}"#).is_err());
    }

    #[test]
    fn union_compose_matches_sequential_application() {
        let x: BTreeSet<i32> = [1, 2, 3].into();
        let p1 = UnionOp {
            add: BTreeSet::from([4, 5]),
            remove: BTreeSet::from([1]),
        };
        let p2 = UnionOp {
            add: BTreeSet::from([1]),
            remove: BTreeSet::from([4, 2]),
        };
        let mut seq = x.clone();
        union_apply(&mut seq, &p1);
        union_apply(&mut seq, &p2);
        let mut once = x;
        union_apply(&mut once, &union_compose(p1, p2));
        assert_eq!(seq, once);
    }
}
