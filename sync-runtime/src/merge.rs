//! Merge primitives: the plain functions the generated `merge_into`, `diff`, `apply` and
//! `compose` call, one family per strategy.
//!
//! Each three-way merge takes the *base* (the last copy both sides agreed on), the
//! *local* value (merged in place) and the *remote* value:
//!
//! | strategy | rule |
//! |---|---|
//! | `lww` | only one side changed: that side. Both: the greater [`Hlc`]; equal stamps (same node, same instant): the greater value by [`MergeValue::tie_cmp`], so the result never depends on which side is "local" |
//! | `sum` | `local + remote - base` (integers wrap; see [`SumValue`]) |
//! | `union` | `(base ∩ local ∩ remote) ∪ (local − base) ∪ (remote − base)`: additions by either side are kept, removals by either side stay removed |
//! | `manual` | only one side changed: that side. Both, to different values: a [`FieldConflict`]; the local value stays until the user resolves it |
//!
//! Laws (checked by property tests): every merge is deterministic; symmetric in local and
//! remote (for `manual`, up to which value stays in place while a conflict is open);
//! `merge(b, b, r) == r`; `merge(b, x, x) == x` for `lww`, `union` and `manual`. A `sum`
//! counts *operations*: two replicas that each added `d` added `2d`, so
//! `merge(b, x, x) == x + (x - b)`; what makes `sum` safe against duplicates is that
//! each operation is applied once (idempotency keys), and re-merging an already merged
//! value with the same remote changes nothing (`merge(r, m, r) == m`).

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashSet};
use std::hash::{BuildHasher, Hash};

use chrono::{DateTime, Utc};
use serde::{Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::hlc::Hlc;

/// A field whose two concurrent edits could not be merged automatically (`manual` strategy).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct FieldConflict {
    /// The field's wire name.
    pub field: String,
    /// The value both sides started from.
    pub base: serde_json::Value,
    /// This replica's value.
    pub local: serde_json::Value,
    /// The other replica's value.
    pub remote: serde_json::Value,
}

/// A value that `lww` and `manual` can compare: equality for "did this side change", and
/// a total order to break exact clock ties the same way on every replica.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a field type syncgen can merge",
    label = "not a syncgen field type",
    note = "use bool, an integer, f32/f64, String, Uuid, DateTime<Utc>, Vec<u8>, Option<T> or a set, or add #[sync(json)] to sync any serde type as one JSON value"
)]
pub trait MergeValue: Clone {
    /// Whether two values are the same (floats compare by bits via `total_cmp`, so `NaN`
    /// equals itself and a merge never loops on it).
    fn same(&self, other: &Self) -> bool {
        self.tie_cmp(other) == Ordering::Equal
    }
    /// A total order, used only when two edits carry the same [`Hlc`].
    fn tie_cmp(&self, other: &Self) -> Ordering;
}

macro_rules! merge_value_ord {
    ($($t:ty),*) => {$(
        impl MergeValue for $t {
            fn same(&self, other: &Self) -> bool { self == other }
            fn tie_cmp(&self, other: &Self) -> Ordering { self.cmp(other) }
        }
    )*};
}
merge_value_ord!(
    bool,
    i8,
    i16,
    i32,
    i64,
    u8,
    u16,
    u32,
    String,
    Uuid,
    DateTime<Utc>
);

impl MergeValue for f32 {
    fn tie_cmp(&self, other: &Self) -> Ordering {
        self.total_cmp(other)
    }
}

impl MergeValue for f64 {
    fn tie_cmp(&self, other: &Self) -> Ordering {
        self.total_cmp(other)
    }
}

impl<T: MergeValue> MergeValue for Option<T> {
    fn same(&self, other: &Self) -> bool {
        match (self, other) {
            (Some(a), Some(b)) => a.same(b),
            (None, None) => true,
            _ => false,
        }
    }
    fn tie_cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Some(a), Some(b)) => a.tie_cmp(b),
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
        }
    }
}

impl<T: MergeValue> MergeValue for Vec<T> {
    fn same(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().zip(other).all(|(a, b)| a.same(b))
    }
    fn tie_cmp(&self, other: &Self) -> Ordering {
        for (a, b) in self.iter().zip(other) {
            match a.tie_cmp(b) {
                Ordering::Equal => continue,
                o => return o,
            }
        }
        self.len().cmp(&other.len())
    }
}

impl<T: Ord + Clone> MergeValue for BTreeSet<T> {
    fn same(&self, other: &Self) -> bool {
        self == other
    }
    fn tie_cmp(&self, other: &Self) -> Ordering {
        self.iter().cmp(other.iter())
    }
}

impl<T: Ord + Hash + Clone, S: BuildHasher + Clone> MergeValue for HashSet<T, S> {
    fn same(&self, other: &Self) -> bool {
        self == other
    }
    fn tie_cmp(&self, other: &Self) -> Ordering {
        let mut a: Vec<&T> = self.iter().collect();
        let mut b: Vec<&T> = other.iter().collect();
        a.sort();
        b.sort();
        a.cmp(&b)
    }
}

/// `lww` merge in place: `local`/`local_clock` become the winner.
pub fn lww_into<T: MergeValue>(
    local: &mut T,
    local_clock: &mut Hlc,
    base: &T,
    remote: &T,
    remote_clock: Hlc,
) {
    let local_changed = !local.same(base);
    let remote_changed = !remote.same(base);
    let remote_wins = match (local_changed, remote_changed) {
        (_, false) => false,
        (false, true) => true,
        (true, true) if local.same(remote) => false,
        (true, true) => match remote_clock.cmp(local_clock) {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal => remote.tie_cmp(local) == Ordering::Greater,
        },
    };
    if remote_wins {
        local.clone_from(remote);
        *local_clock = remote_clock;
    } else if local_changed == remote_changed {
        // Neither changed, or both made the same edit: the later stamp describes it.
        *local_clock = (*local_clock).max(remote_clock);
    }
}

/// Whether an `lww` operation stamped `op_clock` replaces `current` (stamped `clock`).
pub fn lww_op_wins<T: MergeValue>(op_value: &T, op_clock: Hlc, current: &T, clock: Hlc) -> bool {
    match op_clock.cmp(&clock) {
        Ordering::Greater => true,
        Ordering::Less => false,
        Ordering::Equal => op_value.tie_cmp(current) == Ordering::Greater,
    }
}

/// [`lww_op_wins`] for a `#[sync(json)]` field.
pub fn lww_json_op_wins<T: Serialize>(
    op_value: &T,
    op_clock: Hlc,
    current: &T,
    clock: Hlc,
) -> bool {
    lww_op_wins(
        &JsonOrd(to_json(op_value)),
        op_clock,
        &JsonOrd(to_json(current)),
        clock,
    )
}

/// Whether a `manual` operation `(base -> set)` conflicts with the current value.
pub fn manual_op_conflicts<T: MergeValue>(current: &T, base: &T, set: &T) -> bool {
    !current.same(base) && !current.same(set)
}

/// [`manual_op_conflicts`] for a `#[sync(json)]` field.
pub fn manual_json_op_conflicts<T: Serialize>(current: &T, base: &T, set: &T) -> bool {
    let c = to_json(current);
    c != to_json(base) && c != to_json(set)
}

/// `lww` merge for a `#[sync(json)]` field: equality and ties by the JSON value.
pub fn lww_json_into<T: Serialize + DeserializeOwned + Clone>(
    local: &mut T,
    local_clock: &mut Hlc,
    base: &T,
    remote: &T,
    remote_clock: Hlc,
) {
    // Decide on the JSON values, then copy the typed remote value if it won: one
    // serialisation per side, and the typed value is only cloned when it changes.
    let (b, l, r) = (to_json(base), to_json(local), to_json(remote));
    let already_remote = l == r;
    let mut winner = JsonOrd(l);
    let r = JsonOrd(r);
    lww_into(&mut winner, local_clock, &JsonOrd(b), &r, remote_clock);
    if !already_remote && winner.0 == r.0 {
        local.clone_from(remote);
    }
}

/// `manual` merge in place; a conflict is pushed when both sides changed to different values.
pub fn manual_into<T: MergeValue + Serialize>(
    local: &mut T,
    base: &T,
    remote: &T,
    field: &'static str,
    conflicts: &mut Vec<FieldConflict>,
) {
    if remote.same(base) || remote.same(local) {
        return;
    }
    if local.same(base) {
        local.clone_from(remote);
    } else {
        conflicts.push(FieldConflict {
            field: field.to_owned(),
            base: to_json(base),
            local: to_json(local),
            remote: to_json(remote),
        });
    }
}

/// `manual` merge for a `#[sync(json)]` field.
pub fn manual_json_into<T: Serialize + Clone>(
    local: &mut T,
    base: &T,
    remote: &T,
    field: &'static str,
    conflicts: &mut Vec<FieldConflict>,
) {
    let (b, l, r) = (to_json(base), to_json(local), to_json(remote));
    if r == b || r == l {
        return;
    }
    if l == b {
        local.clone_from(remote);
    } else {
        conflicts.push(FieldConflict {
            field: field.to_owned(),
            base: b,
            local: l,
            remote: r,
        });
    }
}

fn to_json<T: Serialize>(v: &T) -> serde_json::Value {
    // Field types are plain data; a failing Serialize impl is reported as null rather
    // than aborting a merge.
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// A JSON value with a total order (by its canonical text), for json-field ties.
#[derive(Clone, PartialEq)]
struct JsonOrd(serde_json::Value);

impl MergeValue for JsonOrd {
    fn same(&self, other: &Self) -> bool {
        self.0 == other.0
    }
    fn tie_cmp(&self, other: &Self) -> Ordering {
        self.0.to_string().cmp(&other.0.to_string())
    }
}

/// A number that `sum` can merge: concurrent changes are deltas that add up.
///
/// Integers use wrapping arithmetic, so merging never panics and stays associative and
/// commutative; floats use IEEE addition (rounding may differ in the last bits between
/// orders of application).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be merged with `sum`",
    label = "`sum` needs a signed integer or a float",
    note = "use i8, i16, i32, i64, f32 or f64, or another merge strategy"
)]
pub trait SumValue: Copy + PartialEq {
    /// `self + delta`.
    fn add(self, delta: Self) -> Self;
    /// `self - other`.
    fn sub(self, other: Self) -> Self;
    /// The additive identity.
    fn zero() -> Self;
}

macro_rules! sum_int {
    ($($t:ty),*) => {$(
        impl SumValue for $t {
            fn add(self, d: Self) -> Self { self.wrapping_add(d) }
            fn sub(self, o: Self) -> Self { self.wrapping_sub(o) }
            fn zero() -> Self { 0 }
        }
    )*};
}
sum_int!(i8, i16, i32, i64);

macro_rules! sum_float {
    ($($t:ty),*) => {$(
        impl SumValue for $t {
            fn add(self, d: Self) -> Self { self + d }
            fn sub(self, o: Self) -> Self { self - o }
            fn zero() -> Self { 0.0 }
        }
    )*};
}
sum_float!(f32, f64);

/// `sum` merge in place: `local = (local + remote) - base`.
///
/// Written as `(local + remote) - base`, which is exactly symmetric in the two sides
/// even for floats (IEEE addition is commutative); when one side did not change, the
/// other side is taken as is, so `merge(b, b, r) == r` holds exactly too.
pub fn sum_into<T: SumValue>(local: &mut T, base: &T, remote: &T) {
    if remote == base {
        return;
    }
    if local == base {
        *local = *remote;
        return;
    }
    *local = local.add(*remote).sub(*base);
}

/// A collection that `union` can merge, diff and patch as a set.
///
/// `Vec<T>` is treated as a set kept sorted and without duplicates (see
/// [`UnionSet::normalize`]).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be merged with `union`",
    label = "`union` needs BTreeSet<T>, HashSet<T> or Vec<T>",
    note = "set items must be Ord (BTreeSet, Vec) or Hash + Eq (HashSet)"
)]
pub trait UnionSet: Clone + Default {
    /// Whether the set has no items.
    fn is_empty(&self) -> bool;
    /// Three-way merge in place (see the module docs).
    fn merge_into(&mut self, base: &Self, remote: &Self);
    /// The items added and removed going from `old` to `new`.
    fn diff(old: &Self, new: &Self) -> (Self, Self);
    /// Removes `remove`, then adds `add`.
    fn apply(&mut self, add: &Self, remove: &Self);
    /// Brings the value to its canonical form (a `Vec` is sorted and deduplicated).
    fn normalize(&mut self) {}
    /// Whether two sets hold the same items.
    fn same_set(&self, other: &Self) -> bool;
    /// Items of `self` that are not in `other`.
    fn minus(&self, other: &Self) -> Self;
    /// Items of either.
    fn union(&self, other: &Self) -> Self;
}

impl<T: Ord + Clone> UnionSet for BTreeSet<T> {
    fn is_empty(&self) -> bool {
        BTreeSet::is_empty(self)
    }
    fn merge_into(&mut self, base: &Self, remote: &Self) {
        // Removed by remote: in base, not in remote.
        self.retain(|x| !base.contains(x) || remote.contains(x));
        // Added by remote: in remote, not in base.
        for x in remote {
            if !base.contains(x) && !self.contains(x) {
                self.insert(x.clone());
            }
        }
    }
    fn diff(old: &Self, new: &Self) -> (Self, Self) {
        (
            new.difference(old).cloned().collect(),
            old.difference(new).cloned().collect(),
        )
    }
    fn apply(&mut self, add: &Self, remove: &Self) {
        for x in remove {
            self.remove(x);
        }
        for x in add {
            if !self.contains(x) {
                self.insert(x.clone());
            }
        }
    }
    fn same_set(&self, other: &Self) -> bool {
        self == other
    }
    fn minus(&self, other: &Self) -> Self {
        self.difference(other).cloned().collect()
    }
    fn union(&self, other: &Self) -> Self {
        BTreeSet::union(self, other).cloned().collect()
    }
}

impl<T: Hash + Eq + Clone, S: BuildHasher + Default + Clone> UnionSet for HashSet<T, S> {
    fn is_empty(&self) -> bool {
        HashSet::is_empty(self)
    }
    fn merge_into(&mut self, base: &Self, remote: &Self) {
        self.retain(|x| !base.contains(x) || remote.contains(x));
        for x in remote {
            if !base.contains(x) && !self.contains(x) {
                self.insert(x.clone());
            }
        }
    }
    fn diff(old: &Self, new: &Self) -> (Self, Self) {
        (
            new.difference(old).cloned().collect(),
            old.difference(new).cloned().collect(),
        )
    }
    fn apply(&mut self, add: &Self, remove: &Self) {
        for x in remove {
            self.remove(x);
        }
        for x in add {
            if !self.contains(x) {
                self.insert(x.clone());
            }
        }
    }
    fn same_set(&self, other: &Self) -> bool {
        self == other
    }
    fn minus(&self, other: &Self) -> Self {
        self.difference(other).cloned().collect()
    }
    fn union(&self, other: &Self) -> Self {
        HashSet::union(self, other).cloned().collect()
    }
}

fn sorted_contains<T: Ord>(v: &[T], x: &T) -> bool {
    v.binary_search(x).is_ok()
}

impl<T: Ord + Clone> UnionSet for Vec<T> {
    fn is_empty(&self) -> bool {
        <[T]>::is_empty(self)
    }
    fn merge_into(&mut self, base: &Self, remote: &Self) {
        self.retain(|x| !sorted_contains(base, x) || sorted_contains(remote, x));
        let mut added = false;
        for x in remote {
            if !sorted_contains(base, x) && !self.contains(x) {
                self.push(x.clone());
                added = true;
            }
        }
        if added {
            self.sort();
        }
    }
    fn diff(old: &Self, new: &Self) -> (Self, Self) {
        (
            new.iter()
                .filter(|x| !sorted_contains(old, x))
                .cloned()
                .collect(),
            old.iter()
                .filter(|x| !sorted_contains(new, x))
                .cloned()
                .collect(),
        )
    }
    fn apply(&mut self, add: &Self, remove: &Self) {
        self.retain(|x| !remove.contains(x));
        for x in add {
            if !self.contains(x) {
                self.push(x.clone());
            }
        }
        self.sort();
    }
    fn normalize(&mut self) {
        self.sort();
        self.dedup();
    }
    fn same_set(&self, other: &Self) -> bool {
        self == other
    }
    fn minus(&self, other: &Self) -> Self {
        self.iter()
            .filter(|x| !other.contains(x))
            .cloned()
            .collect()
    }
    fn union(&self, other: &Self) -> Self {
        let mut v: Vec<T> = self.iter().chain(other).cloned().collect();
        v.sort();
        v.dedup();
        v
    }
}

/// `union` merge in place.
pub fn union_into<S: UnionSet>(local: &mut S, base: &S, remote: &S) {
    local.merge_into(base, remote);
}

/// Truncates a timestamp to microseconds, the precision every target database keeps.
pub fn normalize_timestamp(t: &mut DateTime<Utc>) {
    let nanos = t.timestamp_subsec_nanos();
    let trunc = nanos - nanos % 1_000;
    if trunc != nanos
        && let Some(v) = chrono::Timelike::with_nanosecond(t, trunc)
    {
        *t = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::NodeId;

    fn h(m: u64, n: u64) -> Hlc {
        Hlc::new(m, 0, NodeId(n))
    }

    #[test]
    fn lww_takes_the_only_changed_side() {
        let mut l = "local".to_string();
        let mut lc = h(5, 1);
        lww_into(
            &mut l,
            &mut lc,
            &"base".to_string(),
            &"base".to_string(),
            h(9, 2),
        );
        assert_eq!(l, "local");
        let mut l = "base".to_string();
        let mut lc = h(9, 1);
        lww_into(
            &mut l,
            &mut lc,
            &"base".to_string(),
            &"remote".to_string(),
            h(1, 2),
        );
        assert_eq!((l.as_str(), lc), ("remote", h(1, 2)));
    }

    #[test]
    fn lww_both_changed_greater_clock_then_value() {
        let mut l = "a".to_string();
        let mut lc = h(5, 1);
        lww_into(
            &mut l,
            &mut lc,
            &"base".to_string(),
            &"b".to_string(),
            h(6, 2),
        );
        assert_eq!(l, "b");
        // Exact tie: the greater value wins on both sides.
        let mut l = "a".to_string();
        let mut lc = h(5, 1);
        lww_into(
            &mut l,
            &mut lc,
            &"base".to_string(),
            &"b".to_string(),
            h(5, 1),
        );
        let mut r = "b".to_string();
        let mut rc = h(5, 1);
        lww_into(
            &mut r,
            &mut rc,
            &"base".to_string(),
            &"a".to_string(),
            h(5, 1),
        );
        assert_eq!(l, "b");
        assert_eq!(r, "b");
    }

    #[test]
    fn sum_adds_deltas() {
        let mut l = 12i64;
        sum_into(&mut l, &10, &15);
        assert_eq!(l, 17);
        let mut l = i64::MAX;
        sum_into(&mut l, &0, &1);
        assert_eq!(l, i64::MIN);
    }

    #[test]
    fn union_keeps_adds_and_removals() {
        let b: BTreeSet<i32> = [1, 2, 3].into();
        let mut l: BTreeSet<i32> = [1, 2, 4].into(); // removed 3, added 4
        let r: BTreeSet<i32> = [2, 3, 5].into(); // removed 1, added 5
        union_into(&mut l, &b, &r);
        assert_eq!(l, [2, 4, 5].into());
        let mut lv = vec![1, 2, 4];
        union_into(&mut lv, &vec![1, 2, 3], &vec![2, 3, 5]);
        assert_eq!(lv, vec![2, 4, 5]);
    }

    #[test]
    fn manual_conflicts_only_on_different_edits() {
        let mut c = Vec::new();
        let mut l = 10i64;
        manual_into(&mut l, &5, &10, "price", &mut c);
        assert!(c.is_empty());
        manual_into(&mut l, &5, &12, "price", &mut c);
        assert_eq!(l, 10);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].remote, serde_json::json!(12));
        let mut l = 5i64;
        manual_into(&mut l, &5, &12, "price", &mut c);
        assert_eq!(l, 12);
    }

    #[test]
    fn timestamps_truncate_to_micros() {
        let mut t = DateTime::from_timestamp(1, 123_456_789).unwrap();
        normalize_timestamp(&mut t);
        assert_eq!(t.timestamp_subsec_nanos(), 123_456_000);
    }
}
