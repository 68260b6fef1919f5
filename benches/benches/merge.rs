//! Generated `merge3` of a 10-field entity over 100k records, beside the floor (a plain
//! hand-written compare-and-select over the same fields, what merge code cannot beat) and
//! two peers doing the same merges: a composite of the `crdts` crate's state-based types
//! (six `LWWReg`s, two `PNCounter`s, an `Orswot` and an `MVReg` for the manual field) and
//! `automerge` documents with the same ten keys.
//!
//! Every side does the same edits: local changed `a` and incremented `g`, remote changed
//! `c` and added 2 to `h`. The crdts and automerge merges consume their inputs, so each
//! merge clones what it consumes (merge3 builds a new value from borrowed inputs, which
//! costs the same clones of the untouched fields).
//!
//! `cargo bench -p sync-bench --bench merge`

#![allow(missing_docs)]

use std::collections::BTreeSet;
use std::hint::black_box;

use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ObjType, ROOT, ReadDoc, ScalarValue};
use crdts::{CmRDT, CvRDT, LWWReg, MVReg, Orswot, PNCounter};
use criterion::{Criterion, criterion_group, criterion_main};
use sync_runtime::prelude::*;

/// Ten fields: six lww, two sums, a union and a manual field.
#[derive(Syncable, Clone, Debug, PartialEq)]
pub struct Doc {
    #[sync(id)]
    pub id: Uuid,
    pub a: String,
    pub b: String,
    pub c: i64,
    pub d: bool,
    pub e: f64,
    pub f: Option<String>,
    #[sync(merge = "sum")]
    pub g: i64,
    #[sync(merge = "sum")]
    pub h: i64,
    #[sync(merge = "union")]
    pub i: BTreeSet<String>,
    #[sync(merge = "manual")]
    pub j: i64,
}

fn doc(n: u64) -> Doc {
    Doc {
        id: Uuid::from_u128(u128::from(n)),
        a: format!("title {n}"),
        b: "body".into(),
        c: n as i64,
        d: n.is_multiple_of(2),
        e: 1.5,
        f: None,
        g: 10,
        h: 20,
        i: ["x".to_string()].into(),
        j: 5,
    }
}

/// The floor: select each field from the side that changed it, by hand.
#[allow(clippy::too_many_arguments)]
fn floor(base: &Doc, local: &Doc, remote: &Doc, lc: u64, rc: u64) -> Doc {
    macro_rules! lww {
        ($f:ident) => {
            if remote.$f == base.$f || (local.$f != base.$f && lc >= rc) {
                local.$f.clone()
            } else {
                remote.$f.clone()
            }
        };
    }
    Doc {
        id: local.id,
        a: lww!(a),
        b: lww!(b),
        c: lww!(c),
        d: lww!(d),
        e: lww!(e),
        f: lww!(f),
        g: local.g + remote.g - base.g,
        h: local.h + remote.h - base.h,
        i: if remote.i == base.i {
            local.i.clone()
        } else {
            remote.i.clone()
        },
        j: if local.j == base.j { remote.j } else { local.j },
    }
}

/// The same ten fields as a composite of the `crdts` crate's state-based CRDTs. Markers
/// are `(wall time, node)` pairs, as an HLC would give.
#[derive(Clone)]
struct CrdtsDoc {
    a: LWWReg<String, (u64, u8)>,
    b: LWWReg<String, (u64, u8)>,
    c: LWWReg<i64, (u64, u8)>,
    d: LWWReg<bool, (u64, u8)>,
    e: LWWReg<f64, (u64, u8)>,
    f: LWWReg<Option<String>, (u64, u8)>,
    g: PNCounter<u8>,
    h: PNCounter<u8>,
    i: Orswot<String, u8>,
    j: MVReg<i64, u8>,
}

impl CrdtsDoc {
    fn of(d: &Doc) -> Self {
        let reg = |marker| marker;
        let mut g = PNCounter::new();
        g.apply(g.inc_many(0, d.g as u64));
        let mut h = PNCounter::new();
        h.apply(h.inc_many(0, d.h as u64));
        let mut i = Orswot::new();
        for x in &d.i {
            i.apply(i.add(x.clone(), i.read_ctx().derive_add_ctx(0)));
        }
        let mut j = MVReg::new();
        j.apply(j.write(d.j, j.read_ctx().derive_add_ctx(0)));
        Self {
            a: LWWReg {
                val: d.a.clone(),
                marker: reg((1, 0)),
            },
            b: LWWReg {
                val: d.b.clone(),
                marker: reg((1, 0)),
            },
            c: LWWReg {
                val: d.c,
                marker: reg((1, 0)),
            },
            d: LWWReg {
                val: d.d,
                marker: reg((1, 0)),
            },
            e: LWWReg {
                val: d.e,
                marker: reg((1, 0)),
            },
            f: LWWReg {
                val: d.f.clone(),
                marker: reg((1, 0)),
            },
            g,
            h,
            i,
            j,
        }
    }

    /// State-based merge of two replicas; consumes `other`.
    fn merge(&mut self, other: Self) {
        self.a.merge(other.a);
        self.b.merge(other.b);
        self.c.merge(other.c);
        self.d.merge(other.d);
        self.e.merge(other.e);
        self.f.merge(other.f);
        self.g.merge(other.g);
        self.h.merge(other.h);
        self.i.merge(other.i);
        self.j.merge(other.j);
    }
}

/// The same ten fields in an automerge document: scalars for the lww and manual fields,
/// counters for the sums, a map of keys for the set.
fn automerge_doc(d: &Doc) -> AutoCommit {
    let mut doc = AutoCommit::new().with_actor(ActorId::from(vec![0u8; 16]));
    doc.put(ROOT, "a", d.a.as_str()).expect("put");
    doc.put(ROOT, "b", d.b.as_str()).expect("put");
    doc.put(ROOT, "c", d.c).expect("put");
    doc.put(ROOT, "d", d.d).expect("put");
    doc.put(ROOT, "e", d.e).expect("put");
    doc.put(ROOT, "f", ScalarValue::Null).expect("put");
    doc.put(ROOT, "g", ScalarValue::counter(d.g)).expect("put");
    doc.put(ROOT, "h", ScalarValue::counter(d.h)).expect("put");
    let set = doc.put_object(ROOT, "i", ObjType::Map).expect("put");
    for x in &d.i {
        doc.put(&set, x.as_str(), true).expect("put");
    }
    doc.put(ROOT, "j", d.j).expect("put");
    doc.commit();
    doc
}

fn bench(c: &mut Criterion) {
    let n = 100_000u64;
    let bases: Vec<Doc> = (0..n).map(doc).collect();
    let locals: Vec<Doc> = bases
        .iter()
        .map(|b| Doc {
            a: format!("{} (local)", b.a),
            g: b.g + 1,
            ..b.clone()
        })
        .collect();
    let remotes: Vec<Doc> = bases
        .iter()
        .map(|b| Doc {
            c: b.c + 1,
            h: b.h + 2,
            ..b.clone()
        })
        .collect();
    check_agreement(&bases[0], &locals[0], &remotes[0]);
    let lc = DocClocks::all(Hlc::new(2, 0, NodeId(1)));
    let rc = DocClocks::all(Hlc::new(1, 0, NodeId(2)));
    let mut group = c.benchmark_group("merge3_100k_records_10_fields");
    group.sample_size(10);
    group.bench_function("floor_compare_and_select", |bch| {
        bch.iter(|| {
            let mut sum = 0i64;
            for k in 0..n as usize {
                sum += black_box(floor(&bases[k], &locals[k], &remotes[k], 2, 1)).g;
            }
            sum
        })
    });
    group.bench_function("generated_merge3", |bch| {
        bch.iter(|| {
            let mut sum = 0i64;
            for k in 0..n as usize {
                sum += black_box(Doc::merge3(&bases[k], &locals[k], &lc, &remotes[k], &rc))
                    .value
                    .g;
            }
            sum
        })
    });

    // crdts: the same edits on replicas of the same base.
    let crdt_locals: Vec<CrdtsDoc> = bases
        .iter()
        .zip(&locals)
        .map(|(b, l)| {
            let mut x = CrdtsDoc::of(b);
            x.a.update(l.a.clone(), (2, 1));
            x.g.apply(x.g.inc(1));
            x
        })
        .collect();
    let crdt_remotes: Vec<CrdtsDoc> = bases
        .iter()
        .zip(&remotes)
        .map(|(b, r)| {
            let mut x = CrdtsDoc::of(b);
            x.c.update(r.c, (1, 2));
            x.h.apply(x.h.inc_many(2, 2));
            x
        })
        .collect();
    group.bench_function("crdts_composite_merge", |bch| {
        bch.iter(|| {
            let mut sum = 0usize;
            for k in 0..n as usize {
                let mut m = crdt_locals[k].clone();
                m.merge(crdt_remotes[k].clone());
                sum += black_box(&m).a.val.len();
            }
            sum
        })
    });
    group.finish();

    // automerge: 1000 documents (a document per record; 100k would need gigabytes), the
    // figure per merge is what compares.
    let m = 1_000usize;
    let am: Vec<(AutoCommit, AutoCommit)> = (0..m)
        .map(|k| {
            let mut base = automerge_doc(&bases[k]);
            let mut local = base.fork().with_actor(ActorId::from(vec![1u8; 16]));
            local.put(ROOT, "a", locals[k].a.as_str()).expect("put");
            local.increment(ROOT, "g", 1).expect("increment");
            local.commit();
            let mut remote = base.fork().with_actor(ActorId::from(vec![2u8; 16]));
            remote.put(ROOT, "c", remotes[k].c).expect("put");
            remote.increment(ROOT, "h", 2).expect("increment");
            remote.commit();
            (local, remote)
        })
        .collect();
    let mut group = c.benchmark_group("merge3_1k_records_10_fields");
    group.sample_size(10);
    group.bench_function("generated_merge3", |bch| {
        bch.iter(|| {
            let mut sum = 0i64;
            for k in 0..m {
                sum += black_box(Doc::merge3(&bases[k], &locals[k], &lc, &remotes[k], &rc))
                    .value
                    .g;
            }
            sum
        })
    });
    group.bench_function("automerge_merge", |bch| {
        bch.iter_batched(
            || am.clone(),
            |mut docs| {
                let mut sum = 0usize;
                for (local, remote) in &mut docs {
                    local.merge(remote).expect("merge");
                    sum += local.length(ROOT);
                }
                sum
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// The merged results agree across the three implementations (a benchmark of merges
/// that disagree would compare nothing).
fn check_agreement(base: &Doc, local: &Doc, remote: &Doc) {
    let lc = DocClocks::all(Hlc::new(2, 0, NodeId(1)));
    let rc = DocClocks::all(Hlc::new(1, 0, NodeId(2)));
    let ours = Doc::merge3(base, local, &lc, remote, &rc).value;
    let mut l = CrdtsDoc::of(base);
    l.a.update(local.a.clone(), (2, 1));
    l.g.apply(l.g.inc(1));
    let mut r = CrdtsDoc::of(base);
    r.c.update(remote.c, (1, 2));
    r.h.apply(r.h.inc_many(2, 2));
    l.merge(r);
    assert_eq!(l.a.val, ours.a);
    assert_eq!(l.c.val, ours.c);
    assert_eq!(l.g.read().to_string(), ours.g.to_string());
    assert_eq!(l.h.read().to_string(), ours.h.to_string());
    let mut base_doc = automerge_doc(base);
    let mut al = base_doc.fork().with_actor(ActorId::from(vec![1u8; 16]));
    al.put(ROOT, "a", local.a.as_str()).expect("put");
    al.increment(ROOT, "g", 1).expect("increment");
    let mut ar = base_doc.fork().with_actor(ActorId::from(vec![2u8; 16]));
    ar.put(ROOT, "c", remote.c).expect("put");
    ar.increment(ROOT, "h", 2).expect("increment");
    al.merge(&mut ar).expect("merge");
    let get = |k: &str| al.get(ROOT, k).expect("get").expect("present").0;
    assert_eq!(get("a").as_str(), Some(ours.a.as_str()));
    assert_eq!(get("c").as_i64(), Some(ours.c));
    assert_eq!(get("g").as_i64(), Some(ours.g));
    assert_eq!(get("h").as_i64(), Some(ours.h));
}

criterion_group!(benches, bench);
criterion_main!(benches);
