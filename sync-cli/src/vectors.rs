//! Merge test vectors: cases of the protocol's rules (`PROTOCOL.md`) for one model, as
//! data another server's tests can run.
//!
//! `sync-cli generate` writes them beside the OpenAPI document as
//! `conformance-vectors.json`, and `sync-cli conformance` runs them against a server (one
//! check per case, citing the case's rule). Each case is a sequence of steps; a step
//! pushes one mutation and states what its result must be:
//!
//! ```json
//! { "id": "LWW-1 stale: the later stamp wins whatever the arrival order",
//!   "rule": "LWW-1",
//!   "steps": [
//!     { "push": { "idempotency_key": "key-7-1", "entity_type": "project", "op": "create", ... },
//!       "expect": { "status": "applied", "version": 1, "deleted": false,
//!                   "record": { "name": "..." }, "clocks": { "name": "..." } } },
//!     ...
//!   ] }
//! ```
//!
//! How to run a case against a server, in a test account:
//! - Replace, consistently within the case, every UUID starting with
//!   [`PLACEHOLDER_ID_PREFIX`] (anywhere in the mutations) by a fresh UUID, and every
//!   idempotency key by a fresh key, so that the case can run again.
//! - Push each step's mutation alone and compare its result with `expect`: `status`
//!   always; `version` after adding (the case's first applied version − 1), since a
//!   server whose account was garbage-collected starts records above 1 (CREATE-1);
//!   `deleted`, `fields` (as a set), and the members of `record` and `clocks` that
//!   `expect` names (set fields compare as sets); for `rejected`, `problem_status` and
//!   the slug `problem_type` ends with.
//!
//! Stamps are fixed, in January 2026, so no server bounds them (PUSH-4). Values come
//! from each field's type: a field of a JSON type is `{}` (or its default, or `null` when
//! optional), so a model whose JSON fields refuse `{}` needs its own cases.

use serde_json::{Map, Value as Json, json};
use sync_model::{Entity, Field, MergeStrategy, Model, ScalarType, TypeKind};
use sync_runtime::hlc::{Hlc, NodeId};

/// Every placeholder id in the vectors starts with this; runners replace them.
pub const PLACEHOLDER_ID_PREFIX: &str = "00000000-0000-7000-8000-";

/// The file `sync-cli generate` writes the vectors to.
pub const VECTORS_FILE: &str = "conformance-vectors.json";

/// 2026-01-01T00:00:00Z in milliseconds: the vectors' stamps count from it.
const EPOCH_MS: u64 = 1_767_225_600_000;

fn stamp(seconds: u64, node: u64) -> String {
    Hlc::new(EPOCH_MS + seconds * 1000, 0, NodeId(node)).to_string()
}

/// Device A's and device B's stamp at `seconds` after the epoch.
fn a(seconds: u64) -> String {
    stamp(seconds, 0xa1)
}
fn b(seconds: u64) -> String {
    stamp(seconds, 0xb2)
}

fn placeholder(n: u64) -> String {
    format!("{PLACEHOLDER_ID_PREFIX}{n:012x}")
}

/// The wire value of `f`'s `#[sync(default = ...)]`, if it has one (a JSON field's
/// default is JSON text).
pub(crate) fn default_value(f: &Field) -> Option<Json> {
    let d = f.default.as_ref()?;
    if matches!(f.ty.kind, TypeKind::Json { .. })
        && let Some(s) = d.as_str()
        && let Ok(v) = serde_json::from_str(s)
    {
        return Some(v);
    }
    Some(d.clone())
}

/// A deterministic value of `f`'s type (`n` picks among several for the comparable
/// scalar types; `0` gives the field's default when it has one).
pub(crate) fn value(f: &Field, n: i64) -> Json {
    if n == 0
        && let Some(d) = default_value(f)
    {
        return d;
    }
    let scalar = |s: ScalarType| match s {
        ScalarType::Bool => json!(n % 2 == 0),
        ScalarType::F32 | ScalarType::F64 => json!(1.5 + n as f64),
        s if s.is_integer() => json!(1 + n),
        ScalarType::Uuid => json!(placeholder(0xf00 + n as u64)),
        ScalarType::Timestamp => json!(format!("2026-01-01T00:00:{:02}.000000Z", n % 60)),
        ScalarType::Bytes => json!([1, 2, n % 256]),
        _ => json!(format!("value {n}")),
    };
    match &f.ty.kind {
        TypeKind::Json { .. } if f.ty.nullable => Json::Null,
        TypeKind::Json { .. } => json!({}),
        TypeKind::Scalar { scalar: s } => scalar(*s),
        TypeKind::Set { item, .. } => json!([scalar(*item)]),
    }
}

/// Two values of `f` that differ from each other and from the value records are created
/// with (`value(f, 0)`, which may be the field's default); `None` for a type with too
/// few (booleans) or values a case cannot compare.
fn two_others(f: &Field) -> Option<(Json, Json)> {
    if !comparable(f) {
        return None;
    }
    let base = value(f, 0);
    let mut found: Vec<Json> = Vec::new();
    for k in 1..8 {
        let v = value(f, k);
        if v != base && !found.contains(&v) {
            found.push(v);
        }
        if let [v1, v2] = found.as_slice() {
            return Some((v1.clone(), v2.clone()));
        }
    }
    None
}

/// Whether a check can compare values of `f` it sets (strings, booleans and numbers).
fn comparable(f: &Field) -> bool {
    matches!(
        f.ty.kind,
        TypeKind::Scalar {
            scalar: ScalarType::String | ScalarType::Bool | ScalarType::F32 | ScalarType::F64
        }
    ) || matches!(f.ty.kind, TypeKind::Scalar { scalar } if scalar.is_integer())
}

/// An item for a set field, `n` picking among several; `None` for item types a case
/// cannot make.
fn item(f: &Field, n: u64) -> Option<Json> {
    match &f.ty.kind {
        TypeKind::Set {
            item: ScalarType::String,
            ..
        } => Some(json!(format!("item {n}"))),
        TypeKind::Set { item, .. } if item.is_integer() => Some(json!(100 + n)),
        TypeKind::Set {
            item: ScalarType::Uuid,
            ..
        } => Some(json!(placeholder(0xe00 + n))),
        _ => None,
    }
}

fn editable(f: &Field) -> bool {
    !f.id && !f.immutable
}

fn lww_fields(e: &Entity) -> impl Iterator<Item = &Field> {
    e.synced_fields()
        .filter(|f| f.merge == MergeStrategy::Lww && editable(f))
}

/// Builds the steps of one case.
struct CaseBuilder<'e> {
    e: &'e Entity,
    id: String,
    case: usize,
    keys: usize,
    steps: Vec<Json>,
}

impl<'e> CaseBuilder<'e> {
    fn new(e: &'e Entity, case: usize) -> Self {
        CaseBuilder {
            e,
            id: placeholder(case as u64 + 1),
            case,
            keys: 0,
            steps: Vec::new(),
        }
    }

    fn key(&mut self) -> String {
        self.keys += 1;
        format!("key-{}-{}", self.case, self.keys)
    }

    fn record(&self, n: i64) -> Map<String, Json> {
        self.e
            .synced_fields()
            .map(|f| {
                let v = if f.id { json!(self.id) } else { value(f, n) };
                (f.name.clone(), v)
            })
            .collect()
    }

    fn clocks(&self, at: &str) -> Map<String, Json> {
        lww_fields(self.e)
            .map(|f| (f.name.clone(), json!(at)))
            .collect()
    }

    fn create(&mut self, record: &Map<String, Json>, at: &str, base: Option<i64>) -> Json {
        let mut m = json!({
            "idempotency_key": self.key(),
            "entity_type": self.e.name,
            "entity_id": self.id,
            "op": "create",
            "record": record,
            "clocks": self.clocks(at)
        });
        if let Some(b) = base {
            m["base_version"] = json!(b);
        }
        m
    }

    fn update(&mut self, base: Option<i64>, patch: Json) -> Json {
        json!({
            "idempotency_key": self.key(),
            "entity_type": self.e.name,
            "entity_id": self.id,
            "op": "update",
            "base_version": base,
            "patch": patch
        })
    }

    fn delete(&mut self, base: Option<i64>, at: &str) -> Json {
        json!({
            "idempotency_key": self.key(),
            "entity_type": self.e.name,
            "entity_id": self.id,
            "op": "delete",
            "base_version": base,
            "hlc": at
        })
    }

    fn step(&mut self, push: Json, expect: Json) {
        self.steps.push(json!({ "push": push, "expect": expect }));
    }

    /// The standard first step: create the record with values `n`, stamped `at`.
    fn created(&mut self, n: i64, at: &str) -> Map<String, Json> {
        let record = self.record(n);
        let m = self.create(&record, at, None);
        self.step(
            m,
            json!({ "status": "applied", "version": 1, "deleted": false,
                    "record": record, "clocks": self.clocks(at) }),
        );
        record
    }

    fn done(self, id: String, rule: &str) -> Json {
        json!({ "id": id, "rule": rule, "entity": self.e.name, "steps": self.steps })
    }
}

fn applied(version: i64) -> Json {
    json!({ "status": "applied", "version": version })
}

fn with(mut expect: Json, member: &str, v: Json) -> Json {
    expect[member] = v;
    expect
}

fn one(name: &str, v: Json) -> Json {
    json!({ name: v })
}

/// The first entity with an editable field merged by `strategy` that passes `ok`.
fn find(
    model: &Model,
    strategy: MergeStrategy,
    ok: impl Fn(&Field) -> bool,
) -> Option<(&Entity, &Field)> {
    model.entities.iter().find_map(|e| {
        e.synced_fields()
            .find(|f| editable(f) && f.merge == strategy && ok(f))
            .map(|f| (e, f))
    })
}

/// The vectors of `model`, as written to [`VECTORS_FILE`].
pub fn vectors(model: &Model) -> Json {
    let mut cases: Vec<Json> = Vec::new();
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    let Some(first) = model.entities.first() else {
        return json!({ "cases": [] });
    };

    // CREATE-1, CREATE-2.
    {
        let mut c = CaseBuilder::new(first, next());
        let record = c.created(0, &a(1));
        let other = c.record(1);
        let differing: Vec<String> = other
            .iter()
            .filter(|(k, v)| record.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        let twin = c.create(&other, &b(2), None);
        c.step(
            twin,
            json!({ "status": "conflict", "version": 1, "fields": differing, "record": record }),
        );
        // With a stamp to recognise it by: the same create again, its response lost.
        if lww_fields(first).next().is_some() {
            let replay = c.create(&record, &a(1), None);
            c.step(replay, with(applied(1), "record", json!(record)));
        }
        cases.push(c.done(
            "CREATE-2 a create of a live record is a conflict; the same create again (its response lost) is applied".into(),
            "CREATE-2",
        ));
    }

    if let Some((e, f)) = find(model, MergeStrategy::Lww, |f| two_others(f).is_some()) {
        let name = f.name.clone();
        let (v1, v2) = two_others(f).expect("checked");
        // Based on the current version: sets whatever the stamp.
        let mut c = CaseBuilder::new(e, next());
        c.created(0, &a(10));
        let up = c.update(
            Some(1),
            one(&name, json!({ "set": v1.clone(), "hlc": b(5) })),
        );
        c.step(
            up,
            with(
                with(applied(2), "record", one(&name, v1.clone())),
                "clocks",
                one(&name, json!(a(10))),
            ),
        );
        cases.push(c.done(
            "LWW-1 an edit based on the current version sets the value; the clock keeps the later stamp".into(),
            "LWW-1",
        ));
        // Stale: the later stamp wins, whatever the order.
        for (later_first, title) in [
            (
                true,
                "LWW-1 stale: an edit stamped earlier than the stored clock leaves the value",
            ),
            (
                false,
                "LWW-1 stale: an edit stamped later than the stored clock sets the value",
            ),
        ] {
            let mut c = CaseBuilder::new(e, next());
            c.created(0, &a(1));
            let (first_at, second_at) = if later_first {
                (a(20), b(10))
            } else {
                (a(10), b(20))
            };
            let up = c.update(
                Some(1),
                one(&name, json!({ "set": v1.clone(), "hlc": first_at })),
            );
            c.step(up, with(applied(2), "record", one(&name, v1.clone())));
            let up = c.update(
                Some(1),
                one(&name, json!({ "set": v2.clone(), "hlc": second_at })),
            );
            let (winner, clock) = if later_first {
                (v1.clone(), first_at)
            } else {
                (v2.clone(), second_at)
            };
            c.step(
                up,
                with(
                    with(applied(3), "record", one(&name, winner)),
                    "clocks",
                    one(&name, json!(clock)),
                ),
            );
            cases.push(c.done(title.into(), "LWW-1"));
        }
    }
    if let Some((e, f)) = find(model, MergeStrategy::Lww, |f| {
        matches!(
            f.ty.kind,
            TypeKind::Scalar {
                scalar: ScalarType::String
            }
        )
    }) {
        let name = f.name.clone();
        let mut c = CaseBuilder::new(e, next());
        c.created(0, &a(1));
        let tie = a(30);
        for (step, (v, stays)) in [("tie b", "tie b"), ("tie a", "tie b"), ("tie c", "tie c")]
            .into_iter()
            .enumerate()
        {
            let up = c.update(Some(1), one(&name, json!({ "set": v, "hlc": tie })));
            c.step(
                up,
                with(applied(step as i64 + 2), "record", one(&name, json!(stays))),
            );
        }
        cases.push(c.done(
            "LWW-2 equal stamps: the greater value wins (b, then a stays b, then c)".into(),
            "LWW-2",
        ));
    }

    if let Some((e, f)) = find(
        model,
        MergeStrategy::Sum,
        |f| matches!(f.ty.kind, TypeKind::Scalar { scalar } if scalar.is_integer()),
    ) {
        let name = f.name.clone();
        let mut c = CaseBuilder::new(e, next());
        let record = c.created(0, &a(1));
        let start = record[&name].as_i64().unwrap_or(0);
        let up = c.update(Some(1), one(&name, json!({ "add": 2 })));
        c.step(up, with(applied(2), "record", one(&name, json!(start + 2))));
        let up = c.update(Some(1), one(&name, json!({ "add": -5 })));
        c.step(up, with(applied(3), "record", one(&name, json!(start - 3))));
        cases.push(c.done(
            "SUM-1 deltas from one base both count, negative ones too".into(),
            "SUM-1",
        ));
    }

    if let Some((e, f)) = find(model, MergeStrategy::Union, |f| item(f, 0).is_some()) {
        let name = f.name.clone();
        let mut c = CaseBuilder::new(e, next());
        let record = c.created(0, &a(1));
        let start: Vec<Json> = record[&name].as_array().cloned().unwrap_or_default();
        let (x, y) = (item(f, 1).expect("checked"), item(f, 2).expect("checked"));
        let mut set = start.clone();
        set.push(x.clone());
        let up = c.update(Some(1), one(&name, json!({ "add": [x] })));
        c.step(up, with(applied(2), "record", one(&name, json!(set))));
        set.push(y.clone());
        let up = c.update(Some(1), one(&name, json!({ "add": [y] })));
        c.step(up, with(applied(3), "record", one(&name, json!(set))));
        set.retain(|i| *i != x);
        let up = c.update(Some(1), one(&name, json!({ "remove": [x] })));
        c.step(up, with(applied(4), "record", one(&name, json!(set))));
        let up = c.update(Some(4), one(&name, json!({ "remove": [y], "add": [y] })));
        c.step(up, with(applied(5), "record", one(&name, json!(set))));
        cases.push(c.done(
            "UNION-1 additions from one base both stay; a removal takes only its item; remove then add keeps the item".into(),
            "UNION-1",
        ));
    }

    if let Some((e, f)) = find(model, MergeStrategy::Manual, |f| two_others(f).is_some()) {
        let name = f.name.clone();
        let (v1, v2) = two_others(f).expect("checked");
        let mut c = CaseBuilder::new(e, next());
        let record = c.created(0, &a(1));
        let base = record[&name].clone();
        let up = c.update(
            Some(1),
            one(&name, json!({ "set": v1.clone(), "base": base })),
        );
        c.step(up, with(applied(2), "record", one(&name, v1.clone())));
        let up = c.update(
            Some(1),
            one(&name, json!({ "set": v2.clone(), "base": base })),
        );
        c.step(
            up,
            json!({ "status": "conflict", "version": 2, "fields": [name], "record": one(&name, v1.clone()) }),
        );
        let up = c.update(
            Some(1),
            one(&name, json!({ "set": v1.clone(), "base": base })),
        );
        c.step(up, with(applied(3), "record", one(&name, v1.clone())));
        let up = c.update(
            Some(3),
            one(&name, json!({ "set": v2.clone(), "base": v1.clone() })),
        );
        c.step(up, with(applied(4), "record", one(&name, v2.clone())));
        cases.push(c.done(
            "MANUAL-1 a stale edit that clashes is a conflict and applies nothing; one that sets the current value applies; one on the current version applies".into(),
            "MANUAL-1",
        ));
    }

    // PUSH-2, PUSH-3.
    {
        let mut c = CaseBuilder::new(first, next());
        c.created(0, &a(1));
        let up = c.update(Some(1), json!({}));
        c.step(up, applied(1));
        let up = c.update(Some(9), json!({}));
        c.step(up, applied(1));
        cases.push(c.done(
            "PUSH-3 an empty patch is a check: applied, no new version".into(),
            "PUSH-3",
        ));
        if let Some((f, (v1, _))) = lww_fields(first).find_map(|f| two_others(f).map(|v| (f, v))) {
            let mut c = CaseBuilder::new(first, next());
            c.created(0, &a(1));
            let up = c.update(
                Some(9),
                one(&f.name, json!({ "set": v1.clone(), "hlc": a(5) })),
            );
            c.step(up, with(applied(10), "record", one(&f.name, v1.clone())));
            cases.push(c.done(
                "PUSH-2 a new version is above the base_version a device reported".into(),
                "PUSH-2",
            ));
        }
    }

    // Deletes and tombstones.
    {
        let mut c = CaseBuilder::new(first, next());
        let record = c.created(0, &a(1));
        let del = c.delete(Some(1), &a(40));
        c.step(
            del,
            json!({ "status": "applied", "version": 2, "deleted": true, "record": record, "clocks": c.clocks(&a(40)) }),
        );
        let up = c.update(Some(1), json!({}));
        c.step(
            up,
            json!({ "status": "conflict", "version": 2, "deleted": true, "fields": [] }),
        );
        let del = c.delete(Some(2), &a(41));
        c.step(
            del,
            json!({ "status": "applied", "version": 2, "deleted": true }),
        );
        cases.push(c.done(
            "DELETE-1 a delete keeps a tombstone; UPDATE-2 updates of it conflict; DELETE-2 deleting it again changes nothing".into(),
            "DELETE-1",
        ));
        let mut c = CaseBuilder::new(first, next());
        let record = c.created(0, &a(1));
        let del = c.delete(Some(1), &a(40));
        c.step(
            del,
            json!({ "status": "applied", "version": 2, "deleted": true }),
        );
        let stale = c.create(&record, &b(20), None);
        c.step(
            stale,
            json!({ "status": "conflict", "version": 2, "deleted": true }),
        );
        let again = c.record(1);
        let recreate = c.create(&again, &a(50), Some(2));
        c.step(
            recreate,
            json!({ "status": "applied", "version": 3, "deleted": false, "record": again, "clocks": c.clocks(&a(50)) }),
        );
        cases.push(c.done(
            "CREATE-3 a create that did not see the delete conflicts with the tombstone; one naming the tombstone's version recreates".into(),
            "CREATE-3",
        ));
    }

    // Records never held.
    {
        let mut c = CaseBuilder::new(first, next());
        let up = c.update(Some(1), json!({}));
        let unknown = json!({ "status": "rejected", "problem_status": 422, "problem_type": "unknown-record" });
        c.step(up, unknown.clone());
        let del = c.delete(None, &a(1));
        c.step(del, unknown);
        cases.push(c.done(
            "UPDATE-2 an update or a delete of an id never held is rejected unknown-record".into(),
            "UPDATE-2",
        ));
    }

    // Idempotency.
    {
        let mut c = CaseBuilder::new(first, next());
        let record = c.record(0);
        let m = c.create(&record, &a(1), None);
        c.step(m.clone(), with(applied(1), "record", json!(record)));
        c.step(m.clone(), with(applied(1), "record", json!(record)));
        let mut other = c.update(Some(1), json!({}));
        other["idempotency_key"] = m["idempotency_key"].clone();
        c.step(
            other,
            json!({ "status": "rejected", "problem_status": 422, "problem_type": "idempotency-key-reused" }),
        );
        cases.push(c.done(
            "IDEM-1 the same key and body replays the result; IDEM-2 the same key with another body is rejected".into(),
            "IDEM-1",
        ));
    }

    json!({
        "about": "Merge test vectors of the syncgen protocol for this model; see PROTOCOL.md and sync_cli::vectors for how to run them.",
        "protocol": sync_runtime::protocol::PROTOCOL_VERSION,
        "placeholder_id_prefix": PLACEHOLDER_ID_PREFIX,
        "cases": cases
    })
}
